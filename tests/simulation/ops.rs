//! The operations a run is made of, drawn from a seed. A run is a list of them, so a failing
//! one can be replayed, and shrunk by dropping operations.

use std::fmt;

use super::directory::DirFault;
use super::rng::Rng;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Time passes; the leader's caches catch up (the kinds in `sync`, a bit each) and it runs
    /// what is due, `width` reconciles at once, in an order drawn from `order`.
    Tick {
        millis: u64,
        sync: u8,
        order: u64,
        width: u8,
    },
    CreateRequest {
        user: u8,
        group: u8,
        owner: bool,
        minutes: u16,
        signed: bool,
    },
    /// The requester of `request` extends it (`kubectl pim extend`): a new request naming it in
    /// `spec.extends`, `minutes` past its end.
    ExtendRequest {
        request: u8,
        minutes: u16,
        signed: bool,
    },
    Vote {
        request: u8,
        voter: u8,
        approve: bool,
        signed: bool,
    },
    Deactivate {
        request: u8,
    },
    DeleteRequest {
        request: u8,
    },
    StripFinalizer {
        request: u8,
    },
    /// Status written by hand: Active, approved by nobody, for ten hours.
    ForgeStatus {
        request: u8,
    },
    PutAssignment {
        user: u8,
        group: u8,
        owner: bool,
        active: bool,
        minutes: Option<u16>,
    },
    DeleteAssignment {
        user: u8,
        group: u8,
        owner: bool,
    },
    /// Applies the policy (creating it again if it was deleted).
    EditPolicy {
        policy: u8,
        max_minutes: u16,
        min_approvals: u8,
    },
    DeletePolicy {
        policy: u8,
    },
    SetStanding {
        group: u8,
        remove: bool,
    },
    /// The PimGroup points at another directory group, through another connection when
    /// `directory`.
    MoveGroup {
        group: u8,
        directory: bool,
    },
    DeleteGroup {
        group: u8,
    },
    RecreateGroup {
        group: u8,
    },
    DriftAdd {
        group: u8,
        user: u8,
        owner: bool,
    },
    DriftRemove {
        group: u8,
        pick: u8,
        owner: bool,
    },
    /// The leader dies at its `calls`-th call to the world from now.
    Crash {
        calls: u8,
    },
    /// A new leader takes over; the old one, cut off from the API server, first runs `stale`
    /// reconciles from its cache before its lease fence stops it.
    Failover {
        stale: u8,
    },
    DropWatches,
    /// The watches' resourceVersion expired: 410 Gone, then a relist.
    Gone,
    ApiFaults {
        code: u16,
        count: u8,
    },
    DirFaults {
        directory: u8,
        fault: DirFault,
        count: u8,
    },
    ClockJump {
        seconds: i32,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// `count` operations from `seed`: mostly time passing and users at work, with faults mixed in.
pub fn generate(seed: u64, count: usize) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let mut ops = Vec::with_capacity(count);
    let mut requests: u8 = 0;
    for _ in 0..count {
        let roll = rng.below(100);
        let r = |rng: &mut Rng, n: u8| rng.below(u64::from(n.max(1))) as u8;
        let op = match roll {
            0..=37 => {
                let millis = *rng.pick(&[200, 1_000, 5_000, 15_000, 30_000, 60_000]);
                // Watches deliver within moments: only a short tick leaves some caches behind.
                let partial = millis <= 5_000 && rng.chance(30);
                Op::Tick {
                    millis,
                    sync: if partial {
                        rng.below(32) as u8
                    } else {
                        0b1_1111
                    },
                    order: rng.next_u64(),
                    width: rng.range(1, 3) as u8,
                }
            }
            38..=47 if requests > 0 && rng.chance(25) => {
                let request = r(&mut rng, requests);
                requests = requests.saturating_add(1);
                Op::ExtendRequest {
                    request,
                    minutes: *rng.pick(&[3, 10, 20, 45]),
                    signed: rng.chance(90),
                }
            }
            38..=47 => {
                requests = requests.saturating_add(1);
                Op::CreateRequest {
                    user: rng.below(4) as u8,
                    group: rng.below(3) as u8,
                    owner: rng.chance(25),
                    minutes: *rng.pick(&[3, 6, 10, 20, 45, 90]),
                    signed: rng.chance(90),
                }
            }
            48..=55 => Op::Vote {
                request: r(&mut rng, requests),
                voter: rng.below(5) as u8,
                approve: rng.chance(85),
                signed: rng.chance(85),
            },
            56..=58 => Op::Deactivate {
                request: r(&mut rng, requests),
            },
            59..=60 => Op::DeleteRequest {
                request: r(&mut rng, requests),
            },
            61 => Op::StripFinalizer {
                request: r(&mut rng, requests),
            },
            62 => Op::ForgeStatus {
                request: r(&mut rng, requests),
            },
            63..=65 => Op::PutAssignment {
                user: rng.below(4) as u8,
                group: rng.below(3) as u8,
                owner: rng.chance(25),
                active: rng.chance(25),
                minutes: if rng.chance(50) {
                    None
                } else {
                    Some(*rng.pick(&[8, 20, 60, 600]))
                },
            },
            66..=67 => Op::DeleteAssignment {
                user: rng.below(4) as u8,
                group: rng.below(3) as u8,
                owner: rng.chance(25),
            },
            69 if rng.chance(30) => Op::DeletePolicy {
                policy: rng.below(2) as u8,
            },
            68..=69 => Op::EditPolicy {
                policy: rng.below(2) as u8,
                max_minutes: *rng.pick(&[10, 20, 30, 60, 90]),
                min_approvals: rng.below(3) as u8,
            },
            70..=71 => Op::SetStanding {
                group: rng.below(3) as u8,
                remove: rng.chance(50),
            },
            72 => Op::MoveGroup {
                group: rng.below(3) as u8,
                directory: rng.chance(40),
            },
            73 => Op::DeleteGroup {
                group: rng.below(3) as u8,
            },
            74 => Op::RecreateGroup {
                group: rng.below(3) as u8,
            },
            75..=77 => Op::DriftAdd {
                group: rng.below(3) as u8,
                user: rng.below(5) as u8,
                owner: rng.chance(25),
            },
            78..=79 => Op::DriftRemove {
                group: rng.below(3) as u8,
                pick: rng.below(8) as u8,
                owner: rng.chance(25),
            },
            80..=82 => Op::Crash {
                calls: rng.below(12) as u8,
            },
            83..=84 => Op::Failover {
                stale: rng.below(4) as u8,
            },
            85..=86 => Op::DropWatches,
            87 => Op::Gone,
            88..=91 => Op::ApiFaults {
                code: *rng.pick(&[409, 429, 500]),
                count: rng.range(1, 4) as u8,
            },
            92..=96 => Op::DirFaults {
                directory: rng.below(3) as u8,
                fault: match rng.below(4) {
                    0 => DirFault::Throttled(rng.range(1, 30)),
                    1 => DirFault::ServerError,
                    2 => DirFault::Timeout,
                    _ => DirFault::HalfDone,
                },
                count: rng.range(1, 3) as u8,
            },
            _ => Op::ClockJump {
                seconds: if rng.chance(70) {
                    rng.range(30, 1_200) as i32
                } else {
                    -(rng.range(1, 120) as i32)
                },
            },
        };
        ops.push(op);
    }
    ops
}
