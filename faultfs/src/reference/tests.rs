use super::*;

const FILE: Attributes = Attributes {
    mode: 0o644,
    uid: 0,
    gid: 0,
};
const DIR: Attributes = Attributes {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

fn model() -> Model {
    Model::new(FILE, DIR)
}

fn p(path: &str) -> &Path {
    Path::new(path)
}

fn content(tree: &BTreeMap<PathBuf, Seen>, path: &str) -> Option<Vec<u8>> {
    tree.get(p(path)).and_then(|seen| seen.content.clone())
}

#[test]
fn a_file_is_durable_only_once_it_and_its_directory_are_synced() {
    let mut m = model();
    m.create(p("f")).unwrap();
    m.write(p("f"), 0, b"hello").unwrap();
    assert!(m.durable_tree().is_empty());
    m.fsync(p("")).unwrap();
    assert_eq!(content(&m.durable_tree(), "f"), Some(Vec::new()));
    m.fsync(p("f")).unwrap();
    assert_eq!(content(&m.durable_tree(), "f"), Some(b"hello".to_vec()));
    m.write(p("f"), 3, b"p!").unwrap();
    m.power_loss_dropping_everything();
    assert_eq!(content(&m.live_tree(), "f"), Some(b"hello".to_vec()));
}

#[test]
fn a_file_in_a_new_directory_is_durable_only_once_every_directory_above_is_synced() {
    let mut m = model();
    m.mkdir(p("d")).unwrap();
    m.mkdir(p("d/e")).unwrap();
    m.create(p("d/e/f")).unwrap();
    m.write(p("d/e/f"), 0, b"x").unwrap();
    m.fsync(p("d/e/f")).unwrap();
    m.fsync(p("d/e")).unwrap();
    assert!(
        m.durable_tree().is_empty(),
        "e's own entry in d is not durable"
    );
    m.fsync(p("d")).unwrap();
    assert!(
        m.durable_tree().is_empty(),
        "d's own entry in the root is not durable"
    );
    m.fsync(p("")).unwrap();
    assert_eq!(content(&m.durable_tree(), "d/e/f"), Some(b"x".to_vec()));
}

#[test]
fn a_rename_synced_in_the_new_directory_alone_leaves_two_links() {
    let mut m = model();
    m.mkdir(p("a")).unwrap();
    m.mkdir(p("b")).unwrap();
    m.create(p("a/f")).unwrap();
    for dir in ["a", "b", ""] {
        m.fsync(p(dir)).unwrap();
    }
    m.rename(p("a/f"), p("b/f")).unwrap();
    m.fsync(p("b")).unwrap();
    let durable = m.durable_tree();
    assert_eq!(durable[p("a/f")].links, 2);
    assert_eq!(durable[p("b/f")].links, 2);
    m.fsync(p("a")).unwrap();
    assert!(!m.durable_tree().contains_key(p("a/f")));
}

#[test]
fn an_unsynced_chmod_is_not_claimed_either_way() {
    let mut m = model();
    m.create(p("f")).unwrap();
    m.fsync(p("")).unwrap();
    let private = Attributes {
        mode: 0o600,
        ..FILE
    };
    m.set_attributes(p("f"), private).unwrap();
    assert_eq!(m.durable_tree()[p("f")].attributes, None);
    m.fsync(p("f")).unwrap();
    assert_eq!(m.durable_tree()[p("f")].attributes, Some(private));
}

#[test]
fn refusals_match_posix() {
    let mut m = model();
    assert_eq!(m.unlink(p("f")), Err(Refused::NotFound));
    m.mkdir(p("d")).unwrap();
    assert_eq!(m.mkdir(p("d")), Err(Refused::Exists));
    m.create(p("d/f")).unwrap();
    assert_eq!(m.rmdir(p("d")), Err(Refused::NotEmpty));
    assert_eq!(m.create(p("d")), Err(Refused::IsADirectory));
    assert_eq!(m.create(p("d/f/g")), Err(Refused::NotADirectory));
    assert_eq!(m.rename(p("d"), p("e")), Err(Refused::NotModelled));
    m.power_loss_keeping_everything();
    assert_eq!(m.durable_tree(), m.live_tree());
}
