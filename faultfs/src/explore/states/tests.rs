use super::*;

fn op(op: Op) -> Entry {
    Entry::Op {
        op,
        path: PathBuf::from("x"),
    }
}

fn create(parent: Ino, name: &str, ino: Ino) -> Entry {
    op(Op::Create {
        parent,
        name: name.into(),
        ino,
        kind: NodeKind::File,
        mode: 0o644,
    })
}

fn write(ino: Ino, offset: u64, data: &[u8]) -> Entry {
    op(Op::Write {
        ino,
        offset,
        data: data.to_vec(),
    })
}

fn files(tree: &Tree) -> BTreeMap<String, Vec<u8>> {
    tree.walk()
        .into_iter()
        .filter_map(|(path, _, node)| match node {
            Node::File(bytes) => Some((path.display().to_string(), bytes.clone())),
            _ => None,
        })
        .collect()
}

fn states_at(plan: &Plan, point: usize) -> Vec<BTreeMap<String, Vec<u8>>> {
    let pending = plan.pending_at(point);
    plan.states_at(point, &pending)
        .iter()
        .map(|s| files(&plan.tree(s, &pending)))
        .collect()
}

/// The counts the sweep computes match the states listed, at every point.
fn assert_counts_match(plan: &Plan) {
    for (point, counts) in plan.counts().into_iter().enumerate() {
        let pending = plan.pending_at(point);
        let states = plan.states_at(point, &pending);
        assert_eq!(
            counts.primary + counts.secondary,
            states.len(),
            "point {point}"
        );
        assert_eq!(counts.primary, pending.len() + 1);
    }
}

#[test]
fn an_unsynced_rename_over_a_file_leaves_the_old_or_the_new_file() {
    let entries = vec![
        create(ROOT, "f", 2),
        write(2, 0, b"old"),
        op(Op::Fsync {
            ino: 2,
            data_only: false,
        }),
        op(Op::FsyncDir { ino: ROOT }),
        create(ROOT, "tmp", 3),
        write(3, 0, b"new"),
        op(Op::Rename {
            from_parent: ROOT,
            from_name: "tmp".into(),
            to_parent: ROOT,
            to_name: "f".into(),
            ino: 3,
        }),
    ];
    let plan = Plan::new(&entries, MetadataMode::Posix);
    assert_counts_match(&plan);
    let last = plan.points.len() - 1;
    let states = states_at(&plan, last);
    let old = BTreeMap::from([("f".to_string(), b"old".to_vec())]);
    let empty = BTreeMap::from([("f".to_string(), Vec::new())]);
    assert!(states.contains(&old));
    assert!(
        states.contains(&empty),
        "the rename kept without the write: the bug write+rename without fsync makes"
    );
    assert!(states.iter().all(|s| s.contains_key("f")), "never neither");
}

#[test]
fn a_synced_file_in_an_unsynced_directory_is_lost_under_posix_but_not_ext4() {
    let entries = vec![
        create(ROOT, "f", 2),
        write(2, 0, b"data"),
        op(Op::Fsync {
            ino: 2,
            data_only: false,
        }),
    ];
    let posix = Plan::new(&entries, MetadataMode::Posix);
    assert!(states_at(&posix, 3).contains(&BTreeMap::new()));
    let ext4 = Plan::new(&entries, MetadataMode::Ext4);
    assert!(
        states_at(&ext4, 3)
            .iter()
            .all(|s| s.get("f").map(Vec::as_slice) == Some(&b"data"[..]))
    );
}

#[test]
fn ext4_keeps_names_in_the_order_they_were_made() {
    let entries = vec![
        create(ROOT, "a", 2),
        create(ROOT, "b", 3),
        write(3, 0, b"x"),
    ];
    let plan = Plan::new(&entries, MetadataMode::Ext4);
    assert_counts_match(&plan);
    let states = states_at(&plan, 3);
    assert!(
        !states
            .iter()
            .any(|s| s.contains_key("b") && !s.contains_key("a"))
    );
    let posix = Plan::new(&entries, MetadataMode::Posix);
    assert!(
        states_at(&posix, 3)
            .iter()
            .any(|s| s.contains_key("b") && !s.contains_key("a"))
    );
}

#[test]
fn a_write_is_torn_at_sector_and_page_boundaries() {
    assert_eq!(tear_points(0, 8192), vec![512, 4096, 7680]);
    assert_eq!(tear_points(100, 400), Vec::<usize>::new());
    assert_eq!(tear_points(4000, 200), vec![96]);
    let data = vec![7u8; 1024];
    let entries = vec![
        create(ROOT, "f", 2),
        op(Op::FsyncDir { ino: ROOT }),
        write(2, 0, &data),
    ];
    let plan = Plan::new(&entries, MetadataMode::Posix);
    assert_counts_match(&plan);
    let states = states_at(&plan, 3);
    assert!(states.contains(&BTreeMap::from([("f".to_string(), vec![7u8; 512])])));
}

#[test]
fn output_belongs_to_the_point_before_the_next_operation() {
    let entries = vec![
        create(ROOT, "f", 2),
        Entry::Output { line: "one".into() },
        op(Op::FsyncDir { ino: ROOT }),
        Entry::Output { line: "two".into() },
    ];
    let plan = Plan::new(&entries, MetadataMode::Posix);
    assert!(plan.output(0).is_empty());
    assert_eq!(plan.output(1), ["one"]);
    assert_eq!(plan.output(2), ["one", "two"]);
}

#[test]
fn the_sweep_counts_every_state_of_random_records() {
    for seed in 0..40 {
        let mut rng = fault_rules::SplitMix64::new(seed);
        let mut entries = Vec::new();
        let mut files: Vec<Ino> = Vec::new();
        let mut next = 2;
        for _ in 0..60 {
            let entry = match rng.below(7) {
                0 | 1 => {
                    files.push(next);
                    next += 1;
                    create(ROOT, &format!("f{next}"), next - 1)
                }
                _ if files.is_empty() => op(Op::FsyncDir { ino: ROOT }),
                2 | 3 => {
                    let ino = files[rng.below(files.len() as u64) as usize];
                    write(ino, rng.below(9000), &vec![1; 1 + rng.below(5000) as usize])
                }
                4 => op(Op::Fsync {
                    ino: files[rng.below(files.len() as u64) as usize],
                    data_only: false,
                }),
                5 => {
                    let ino = files[rng.below(files.len() as u64) as usize];
                    op(Op::Rename {
                        from_parent: ROOT,
                        from_name: format!("f{}", ino + 1),
                        to_parent: ROOT,
                        to_name: format!("g{ino}"),
                        ino,
                    })
                }
                _ => op(Op::FsyncDir { ino: ROOT }),
            };
            entries.push(entry);
        }
        for model in [MetadataMode::Posix, MetadataMode::Ext4] {
            assert_counts_match(&Plan::new(&entries, model));
        }
    }
}
