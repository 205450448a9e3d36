//! Named shapes of network partitions, chosen by the seed around one pivot node: the ways a
//! real network splits a cluster (a node cut off, a minority cut from a majority, two halves
//! that only one node still connects, a link that works in one direction only).
use std::time::Duration;

use fault_rules::SplitMix64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The pivot cut off from every other node.
    Isolate,
    /// A minority holding the pivot cut from the majority.
    MajorityMinority,
    /// The others split in two halves that cannot talk; the pivot still talks to both.
    Bridge,
    /// The pivot's packets to the others are dropped, or theirs to it, not both.
    OneWay,
}

const SHAPES: [Shape; 4] = [
    Shape::Isolate,
    Shape::MajorityMinority,
    Shape::Bridge,
    Shape::OneWay,
];

/// A random shape around `pivot` in a cluster of `size` nodes, and its description.
pub fn random_cut(size: usize, pivot: usize, rng: &mut SplitMix64) -> (Cut, String) {
    let shape = SHAPES[rng.below(SHAPES.len() as u64) as usize];
    cut(shape, size, pivot, rng)
}

pub fn cut(shape: Shape, size: usize, pivot: usize, rng: &mut SplitMix64) -> (Cut, String) {
    // Two nodes have no minority to speak of and no third node to bridge them.
    let shape = match shape {
        Shape::MajorityMinority | Shape::Bridge if size < 3 => Shape::Isolate,
        shape => shape,
    };
    let mut others: Vec<usize> = (1..=size).filter(|&id| id != pivot).collect();
    shuffle(&mut others, rng);
    match shape {
        Shape::Isolate => {
            let cut = Cut::isolate(pivot, size);
            let text = format!("partition: {} isolated", names(&cut.from));
            (cut, text)
        }
        Shape::MajorityMinority => {
            let mut minority = vec![pivot];
            minority.extend(&others[..(size - 1) / 2 - 1]);
            minority.sort_unstable();
            let majority: Vec<usize> = (1..=size).filter(|id| !minority.contains(id)).collect();
            let text = format!(
                "partition: minority {} | majority {}",
                names(&minority),
                names(&majority)
            );
            (both_ways(minority, majority), text)
        }
        Shape::Bridge => {
            let (left, right) = others.split_at(others.len() / 2);
            let (mut left, mut right) = (left.to_vec(), right.to_vec());
            left.sort_unstable();
            right.sort_unstable();
            let text = format!(
                "partition: bridge, {} | {} cut, n{pivot} talks to both",
                names(&left),
                names(&right)
            );
            (both_ways(left, right), text)
        }
        Shape::OneWay => {
            others.sort_unstable();
            let outgoing = rng.below(2) == 0;
            let (from, to) = if outgoing {
                (vec![pivot], others)
            } else {
                (others, vec![pivot])
            };
            let text = format!(
                "partition: one way, {} -> {} dropped, the reverse flows",
                names(&from),
                names(&to)
            );
            let cut = Cut {
                from,
                to,
                one_way: true,
                loss_percent: 100,
            };
            (cut, text)
        }
    }
}

/// The pivot's packets to and from every other node dropped at random, `percent` of them.
pub fn lossy_link(size: usize, pivot: usize, percent: u32) -> (Cut, String) {
    let cut = Cut {
        loss_percent: percent,
        ..Cut::isolate(pivot, size)
    };
    let text = format!("packet loss: {percent}% between n{pivot} and the others");
    (cut, text)
}

/// A link between the pivot and the others made slow or unreliable by `injector net`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Degradation {
    pub from: Vec<usize>,
    pub to: Vec<usize>,
    /// Only packets from `from` to `to` are affected.
    pub one_way: bool,
    /// What `injector net` is asked for, e.g. `--delay 120ms --jitter 30ms`.
    pub args: Vec<String>,
    /// The shortest the fault may last to have its effect.
    pub at_least: Duration,
}

/// The pivot's packets to the others (or theirs to it, or both) delayed, half the time with
/// jitter up to a quarter of the delay: half the time 20-300 ms (slower than heartbeats, within
/// election timeouts), half the time 600-2500 ms (past the election timeouts of target-db,
/// 0.5-1 s, and etcd, 1 s): a leader whose messages arrive that late is deposed without knowing
/// it, which is where leases and reads that skip the leadership check go wrong. The fault lasts
/// at least twice the delay, so the delay takes effect before the link is restored.
pub fn slow_link(size: usize, pivot: usize, rng: &mut SplitMix64) -> (Degradation, String) {
    let delay = if rng.below(2) == 0 {
        20 + rng.below(281)
    } else {
        600 + rng.below(1901)
    };
    let jitter = if rng.below(2) == 0 {
        0
    } else {
        rng.below(delay / 4 + 1)
    };
    let mut args = vec!["--delay".to_owned(), format!("{delay}ms")];
    let mut amount = format!("{delay} ms");
    if jitter > 0 {
        args.extend(["--jitter".to_owned(), format!("{jitter}ms")]);
        amount.push_str(&format!(" ±{jitter} ms"));
    }
    let (from, to, one_way, arrow) = directed(size, pivot, rng);
    let text = format!(
        "slow network: {} {arrow} {} delayed {amount}",
        names(&from),
        names(&to)
    );
    let link = Degradation {
        from,
        to,
        one_way,
        args,
        at_least: Duration::from_millis(2 * delay),
    };
    (link, text)
}

/// The pivot's packets to and from the others duplicated (5-20%) and reordered (10-40% sent
/// ahead of the rest, which wait 5-20 ms): what retries, deduplication and log matching
/// must absorb.
pub fn flaky_link(size: usize, pivot: usize, rng: &mut SplitMix64) -> (Degradation, String) {
    let duplicate = 5 + rng.below(16);
    let reorder = 10 + rng.below(31);
    let delay = 5 + rng.below(16);
    let args = [
        "--duplicate",
        &format!("{duplicate}%"),
        "--reorder",
        &format!("{reorder}%"),
        "--delay",
        &format!("{delay}ms"),
    ]
    .map(str::to_owned)
    .to_vec();
    let link = Degradation {
        from: vec![pivot],
        to: (1..=size).filter(|&id| id != pivot).collect(),
        one_way: false,
        args,
        at_least: Duration::ZERO,
    };
    let text = format!(
        "flaky network: n{pivot} <-> {}: {duplicate}% duplicated, {reorder}% reordered ahead of \
         the rest (delayed {delay} ms)",
        names(&link.to)
    );
    (link, text)
}

/// From the pivot to the others, from them to it, or both ways, a third of the time each.
fn directed(
    size: usize,
    pivot: usize,
    rng: &mut SplitMix64,
) -> (Vec<usize>, Vec<usize>, bool, &'static str) {
    let others: Vec<usize> = (1..=size).filter(|&id| id != pivot).collect();
    match rng.below(3) {
        0 => (vec![pivot], others, false, "<->"),
        1 => (vec![pivot], others, true, "->"),
        _ => (others, vec![pivot], true, "->"),
    }
}

fn both_ways(from: Vec<usize>, to: Vec<usize>) -> Cut {
    Cut {
        from,
        to,
        one_way: false,
        loss_percent: 100,
    }
}

fn shuffle(ids: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

fn names(ids: &[usize]) -> String {
    ids.iter()
        .map(|id| format!("n{id}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Packets dropped between two sets of nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    pub from: Vec<usize>,
    pub to: Vec<usize>,
    /// Only packets from `from` to `to` are dropped.
    pub one_way: bool,
    /// 100 cuts the link; less drops that share of the packets.
    pub loss_percent: u32,
}

impl Cut {
    /// One node cut off from all the others, both ways.
    pub fn isolate(node: usize, size: usize) -> Cut {
        Cut {
            from: vec![node],
            to: (1..=size).filter(|&id| id != node).collect(),
            one_way: false,
            loss_percent: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_links_stay_in_range_and_name_their_direction() {
        let mut rng = SplitMix64::new(5);
        let mut directions = std::collections::BTreeSet::new();
        let mut long = 0;
        for _ in 0..300 {
            let (link, text) = slow_link(3, 2, &mut rng);
            let delay: u64 = link.args[1].trim_end_matches("ms").parse().unwrap();
            assert!(
                (20..=300).contains(&delay) || (600..=2500).contains(&delay),
                "{text}"
            );
            assert_eq!(link.at_least, Duration::from_millis(2 * delay));
            long += usize::from(delay >= 600);
            if link.args.len() == 4 {
                let jitter: u64 = link.args[3].trim_end_matches("ms").parse().unwrap();
                assert!(jitter <= delay / 4, "{text}");
            }
            assert!(link.from.contains(&2) != link.to.contains(&2), "{text}");
            assert_eq!(link.from.len() + link.to.len(), 3);
            directions.insert((link.from.clone(), link.one_way));
            assert!(text.starts_with("slow network: "), "{text}");
        }
        // Both ways, out of n2, and into n2 all occur; so do delays past election timeouts.
        assert_eq!(directions.len(), 3, "{directions:?}");
        assert!(
            (100..=200).contains(&long),
            "{long} of 300 past election timeouts"
        );
    }

    #[test]
    fn flaky_links_duplicate_and_reorder_with_the_delay_reordering_needs() {
        let mut rng = SplitMix64::new(9);
        let (link, text) = flaky_link(5, 4, &mut rng);
        assert_eq!(link.from, [4]);
        assert_eq!(link.to, [1, 2, 3, 5]);
        assert!(!link.one_way);
        let flags: Vec<&str> = link.args.iter().step_by(2).map(String::as_str).collect();
        assert_eq!(flags, ["--duplicate", "--reorder", "--delay"]);
        assert!(
            text.contains("duplicated") && text.contains("reordered"),
            "{text}"
        );
    }

    fn sides(cut: &Cut) -> (Vec<usize>, Vec<usize>) {
        (cut.from.clone(), cut.to.clone())
    }

    #[test]
    fn two_nodes_fall_back_to_shapes_they_have() {
        for shape in SHAPES {
            let (cut, text) = cut(shape, 2, 1, &mut SplitMix64::new(1));
            assert!(!cut.from.is_empty() && !cut.to.is_empty(), "{text}");
        }
    }

    #[test]
    fn every_shape_cuts_disjoint_nonempty_sides_and_a_minority_cannot_elect() {
        for size in [3, 5] {
            for pivot in 1..=size {
                for seed in 0..20 {
                    for shape in SHAPES {
                        let (cut, text) = cut(shape, size, pivot, &mut SplitMix64::new(seed));
                        let (from, to) = sides(&cut);
                        assert!(!from.is_empty() && !to.is_empty(), "{text}");
                        assert!(from.iter().all(|id| !to.contains(id)), "{text}");
                        assert!(from.iter().chain(&to).all(|&id| (1..=size).contains(&id)));
                        match shape {
                            Shape::Isolate => assert_eq!(from, vec![pivot]),
                            Shape::MajorityMinority => {
                                assert!(from.contains(&pivot));
                                assert!(from.len() < to.len(), "{text}");
                                assert_eq!(from.len() + to.len(), size);
                            }
                            Shape::Bridge => {
                                assert!(!from.contains(&pivot) && !to.contains(&pivot));
                                assert_eq!(from.len() + to.len(), size - 1);
                            }
                            Shape::OneWay => {
                                assert!(cut.one_way);
                                assert!(from == vec![pivot] || to == vec![pivot], "{text}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_cut() {
        let a = random_cut(5, 2, &mut SplitMix64::new(9));
        let b = random_cut(5, 2, &mut SplitMix64::new(9));
        assert_eq!(a, b);
        let shapes: std::collections::BTreeSet<String> = (0..40)
            .map(|seed| random_cut(5, 2, &mut SplitMix64::new(seed)).1)
            .map(|text| text.split_whitespace().nth(1).unwrap().to_owned())
            .collect();
        assert!(
            shapes.len() >= 4,
            "seeds should reach every shape: {shapes:?}"
        );
    }
}
