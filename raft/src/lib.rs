//! # raft: who is active in an HA pair
//!
//! An HA pair is two members and a witness. The three run one openraft 0.9
//! group with three voters: id 1 (first member in the topology), 2 (second
//! member) and 3 (the witness: it votes but never leads on its own and is
//! never active). The group decides **only** which member is active and
//! the epoch (the fencing token carried by every event and command
//! reply). No plant data goes through it: that travels
//! over the pair's JetStream streams.
//!
//! **Architecture invariant**: this crate never depends on NATS or on any
//! other canopy crate. Raft RPC runs over its own TCP listener (the
//! topology's raft port), so the election does not depend on the bus.
//!
//! ## Why a lease, and not "the leader is active"
//!
//! openraft 0.9 has no CheckQuorum and no leader transfer: a leader cut off
//! from the others keeps believing it leads. So the leader is never taken
//! for the active member. The replicated [`PairState`] names the active
//! member; that member may act only while it holds a **lease** that it
//! extends by getting renewals committed, and the leader grants the role to
//! someone else only after that lease has certainly run out.
//!
//! ## Incarnations: every activation gets a strictly larger epoch
//!
//! The role is granted to a *process*, not just to a member id. Every
//! [`Pair::start`] picks a random [`Incarnation`] (a `u64`, never
//! [`NO_INCARNATION`] = 0, never persisted). A member process killed while
//! active and started again on the same data directory recovers a state
//! naming its member active; without incarnations it would renew that
//! epoch and carry on, although everything the epoch stands for (publisher
//! chain, PLC I/O, downstream fencing) starts from scratch in the new
//! process. With them, the recovered activation belongs to the predecessor:
//! the new process neither renews nor releases it, and becomes active only
//! through a new `Acquire`, which raises the epoch.
//!
//! ## The replicated state machine
//!
//! `PairState { active, active_incarnation, epoch, renew_index, health,
//! incarnations, stream_ok, maintenance, group, lapsed }`, changed by:
//! - `Renew { member, incarnation, epoch }`: applied iff
//!   `active == Some(member)`, `incarnation == active_incarnation` and
//!   `epoch == state.epoch`; sets `renew_index` to the entry's log index.
//!   Answers `Ok` or `Fenced`.
//! - `Acquire { member, incarnation, expect_epoch, expect_renew_index }`:
//!   applied iff `member` is 1 or 2 (never the witness), `incarnation` is
//!   the member's latest reported one (`incarnations[member]`, or
//!   `NO_INCARNATION` if it never reported), `state.epoch == expect_epoch`
//!   and `state.renew_index == expect_renew_index`; then `active = member`,
//!   `active_incarnation = incarnation`, `epoch += 1`, `renew_index` =
//!   entry index. Answers `Granted { epoch }` or `Conflict`.
//! - `Release { member, incarnation, epoch, lapsed }`: the active steps
//!   down: iff `active == member`, `incarnation == active_incarnation` and
//!   `epoch == state.epoch`, `active = None` (the epoch stays; the next
//!   Acquire raises it); with `lapsed` (its lease ran out), `lapsed =
//!   member` until the next Acquire (see the lease rule). A restarted
//!   member does **not** release its predecessor's role: nothing but the
//!   process table says the predecessor is gone (a frozen process, or a
//!   second one on the same data directory, could still hold a lease),
//!   and a Release is a claim by the lease holder that it stopped. The
//!   restarted member waits out `grace` like any failover; a restart
//!   takes longer than that anyway.
//! - `Health { member, incarnation, report, stream_ok }`: recorded, and
//!   `incarnation` becomes `incarnations[member]`. The crate adds the
//!   incarnation and the stream state; services report [`Health`] as
//!   before, and the stream through [`Pair::report_stream`].
//! - `Probe`: a no-op (see the grant rule).
//! - `Group { id }`: sets `group` if none (see "A voter whose store is
//!   lost"); a leader's own proposal.
//! - `Maintenance { member, incarnation, on }`: adds `member` to (or removes
//!   it from) `maintenance`; members only. Proposed by the member it
//!   concerns, for itself.
//!
//! Entries and snapshots written before incarnations existed decode with
//! `NO_INCARNATION` (`#[serde(default)]`): such a state names an active no
//! process can renew, so the role is granted again, with a larger epoch,
//! after `grace`. A file that does not decode at all is a
//! [`RaftError::Storage`] naming it, not a panic.
//!
//! Every node also records, **locally and not replicated**, the instant it
//! applied the entry that last moved `renew_index`, and the instant it
//! applied each member's last health report.
//!
//! ## Lease rule (the active member)
//!
//! The active member (the process the state names: member *and*
//! incarnation) proposes `Renew` every `renew` (50 ms). When a
//! proposal commits with `Ok`, its lease is valid until
//! `send instant + lease` (250 ms), counted from when it **sent** the
//! proposal, on `CLOCK_BOOTTIME` ([`BootClock`]): the monotonic clock
//! stops while the machine is suspended, and a member waking from a
//! suspend would take its lease for still running; BOOTTIME counts the
//! suspend, so it wakes with the lease expired. Only the member's side
//! needs it: the leader's `grace` is a wait, and a leader whose clock
//! stops waits longer, the safe side. [`Lease::is_valid`] is what side
//! effects check. When the lease runs out (no commit in time:
//! partitioned, frozen, slow), the member stops being active locally at
//! that instant (a timer, and the deadline check itself needs no task to
//! run), even though the replicated state still names it. A member that releases drops its lease before it
//! sends the `Release`, and never renews that epoch again.
//!
//! **A lapsed lease is final for its epoch.** Once this process's lease
//! for epoch E has run out (or was revoked) while the state still names
//! it, it never renews E again, not even with a renewal that was in
//! flight and commits later, and it proposes `Release` of E (as
//! `step_down` does, reason [`ReleaseReason::Lapsed`]). The role comes
//! back only through an `Acquire`, with epoch E + 1, so a member never
//! shows "lost at E" and then "active at E" again: every activation has a
//! strictly larger epoch, and everything that follows the role (the
//! publisher's chain, PLC I/O, downstream fencing) may take a lost role
//! for the end of its epoch. That `Release` says `lapsed`: the member did
//! not give the role up for cause, so the flap hold does not count it as
//! having lost the role and the leader grants the vacant role back to it
//! first (after `grace`, unless `prefer` or a worse field link says
//! otherwise). A stall longer than `lease` (a slow election, load) thus
//! costs an epoch, not a failover; handing the role to the other member
//! stays the leader's decision after `grace` without renewals.
//!
//! ## Grant rule (the leader)
//!
//! Only the current raft leader grants, and only after its own state
//! machine has applied everything committed: after becoming leader it
//! commits a `Probe` through `client_write` and waits for it; each decision
//! then uses the state as applied. It proposes
//! `Acquire { candidate, expect_epoch: state.epoch, expect_renew_index: state.renew_index }`
//! only when `now − local_apply_instant(renew_index) ≥ grace` (350 ms),
//! over a named active and over a vacant role alike (below).
//!
//! Why this keeps leases disjoint: any renewal that committed `Ok` was
//! applied at the leader no earlier than it was sent, and no later than the
//! renewal at `renew_index` (entries apply in order; a renewal ordered
//! after the Acquire is fenced). So the grant comes at least `grace` (on
//! the leader's clock) after the send of every successful renewal, while
//! each lease lasts `lease` (on the member's clock) after its send. With
//! clock-rate error at most ρ on every node and `margin` for the side
//! effect in flight when the lease is checked, it suffices that
//!
//! ```text
//! grace / (1 + ρ) > lease / (1 − ρ) + margin
//! ```
//!
//! checked by [`Timing::validate`] (defaults: ρ = 1 %, margin = 50 ms:
//! 305.6 ms < 350 ms). And because `Acquire` compares-and-sets on
//! `renew_index`, a renewal that commits between the leader's check and
//! its `Acquire` makes the `Acquire` fail; the leader retries next turn.
//!
//! A vacant role (after a `Release`: prefer, field health, `step_down`)
//! waits out `grace` by the same rule: the member that released revoked
//! its lease before it sent the `Release`, but a side effect it checked
//! just before (a PLC write in flight, bounded by `margin`) may still be
//! on the wire, and the inequality above covers only a grant that comes
//! at least `grace` after the last successful renewal applied at the
//! leader. A `Release` does not move `renew_index`, so the leader's
//! reference point is still that renewal. Only a group that never had an
//! active (epoch 0: no lease was ever held) grants at once. A leader that
//! just took over counts from its own apply instants, as for a named
//! active: entries it applied (or a snapshot it loaded) when it started
//! are stamped with that instant, later than the truth, which only delays
//! the grant.
//!
//! The same argument bounds what outlives the role on the member's side
//! (an `on_deactivate` hook script): no other member is granted before
//! `ended_at + grace·(1 − ρ)/(1 + ρ) − lease` on its own clock, where
//! `ended_at` ([`Lease::ended_at`]) is when its lease ran out or was
//! revoked ([`Timing::peer_grant_earliest`]; 93 ms with the defaults), a
//! released role included, since it waits out `grace` like any grant.
//!
//! An active whose member has since reported another incarnation (it
//! restarted) is *superseded*: no process can renew it any more, so its
//! renewals stop and `grace` elapses by the same rule; then the leader
//! grants as for a vacant role, and the candidate may be the restarted
//! member itself. Nothing in the safety argument changes: the
//! predecessor's last successful renewal is waited out like any other.
//!
//! ## Elections: members stand on their own, after a pre-vote
//!
//! Who leads does not matter for safety, but a failover cannot grant before
//! the group has a leader again. openraft's own election timer is slow for
//! a pair: a follower that knew a leader waits its leader lease
//! (`election_max`) plus its election timeout, and 2·`election_max` more
//! after any vote answer showed it a longer log (a flag that stays set until
//! its next timed election, so one rejected vote at start-up slowed the
//! next failover by 0.6 s). So each member's pair task watches the RPCs it
//! receives and stands by itself (`Raft::trigger().elect()`) once no leader
//! was heard for `election_max` plus a small jitter (every voter's leader
//! lease has run out by then, so the witness can vote), and again every
//! `election_min` or so while nobody wins. A frozen peer (SIGSTOP) keeps its
//! connections open, so RPCs to it time out instead of being refused;
//! nothing waits for those: the member and the witness are a majority.
//!
//! **Pre-vote.** Before it stands, a member asks the other two voters
//! whether they would vote for it now (`Rpc::PreVote`), and stands only if
//! one says yes (with its own vote, a majority). A voter answers by
//! openraft's own vote rules, without changing its vote: yes if it heard
//! no leader within its leader lease and the member's last log id is at
//! least its own; a member that leads always says no. Terms are not
//! compared (a voter with a higher term says yes; the member's election
//! then fails and teaches it that term). openraft's own election timer is
//! off on every node (`enable_elect = false`), so every election starts
//! here. Without the pre-vote, a member cut off from both others stood
//! again and again, raising its term; when the cut healed, its higher term
//! made the leader step down (`HigherVote` on append responses), an
//! election followed and the active's renewals stalled; under load the
//! stall exceeded `grace`, the leader handed the role over, and the healed
//! member could take it back without `prefer`. Refused rounds are counted
//! in [`PairMetrics::stands_refused`]; [`RoleView::term`] shows the term.
//!
//! ## The witness stands only to rescue
//!
//! The witness votes, never campaigns on its own, never proposes and is
//! never a candidate for the role. One case needs it to lead briefly. openraft (like any raft) elects only a voter
//! whose log is at least as up to date as the voters it asks; with the
//! leader dead, a member that missed the last entries (they reached the
//! witness first, which was enough to commit them) can never collect the
//! witness's vote, and the witness would never stand: the pair would stay
//! without an active until the dead member returned. So when the witness
//! rejects a member's vote request, or its pre-vote, because that
//! member's log is behind its own, and no leader has been heard for
//! `election_max`, it triggers an election (`Raft::trigger().elect()`, at
//! most once per `heartbeat`), wins it, and replicates its log to the
//! member with openraft's leader blank entry (and its membership, to a
//! member whose store was emptied: such a member cannot stand, but asks
//! all the same, for this signal). It then steps aside at once: it stops heartbeats and refuses
//! every forwarded proposal; the member, as soon as it holds the witness's
//! whole log, stands and wins. The rescue needs no pre-vote of its own:
//! the witness stands only when a member just asked it and no leader was
//! heard, so it cannot unseat a live leader, and a member whose leader is
//! the witness stands without a pre-vote (the witness leads only to hand
//! over; if the member is still behind, its refused vote is what makes the
//! witness stand again). (If the member has raised its term past the
//! witness's by standing repeatedly, the witness's first attempt fails but
//! teaches it the member's term; its next attempt ties with the member's
//! next term, and openraft breaks ties by node id, the witness's being 3.)
//! The witness never decides grants. Safety does not depend on who leads
//! (see above).
//!
//! ## Forwarded proposals: a peer proposes only for itself
//!
//! A member that does not lead sends its proposals to the leader
//! ([`network::Rpc::Forward`]). The leader proposes a forwarded `Renew`,
//! `Release`, `Health` or `Maintenance` only if the request names the peer
//! whose hello authenticated the connection, and never a forwarded
//! `Acquire`, `Probe` or `Group` (a leader's own proposals, made after its
//! own checks); anything else is
//! answered `Reply::Failed("forward refused: …")` and counted in
//! [`PairMetrics::rejected_forwards`]. Otherwise any voter could force a
//! failover with a forged report naming the active, or renew the role for
//! another member.
//!
//! ## Role decisions
//!
//! [`decide()`] is a pure function of the applied state and local
//! observations: grant a vacant role (after `grace`) to a ready, recently
//! heard-from member not in maintenance (prefer `prefer`, then the member
//! whose lease lapsed, then sound PLC and stream links, then the lowest
//! id); hand over after `grace` without renewals (to the other member, or,
//! if the active was superseded by a restart, as for a vacant role; a new
//! leader takes another member for alive only on a health report it
//! applied since it leads); sticky otherwise, unless `prefer` names the
//! returning member; release on maintenance, on field health (the
//! active's PLC link down for 3 reports while the standby's is up), on
//! stream health (the active could not append to its own stream for 3
//! reports while the standby reads its stream fine:
//! [`Pair::report_stream`]; never to a member that cannot use its stream
//! either) or when not ready; no flapping within 2 s. See its module for
//! the rules and their tests.
//!
//! A member's report is its [`Health`] plus its stream state, replicated
//! together (`Request::Health { report, stream_ok }`, the latter
//! `#[serde(default)]` so members of different versions agree) and
//! counted in a row locally like the PLC state.
//!
//! ## A voter whose store is lost never helps a stale leader
//!
//! A voter with an empty store (no log, no vote, no snapshot) would vote
//! and accept appends at term 0; a stale leader (cut off since another was
//! elected; openraft 0.9 has no CheckQuorum) could then commit with it
//! again and renew, release or grant under epochs the group already used,
//! and an emptied member used to `initialize()` a group of its own. So:
//! - every store carries a **group identity**: a random id the group's
//!   first leader commits (`Request::Group`, applied only while the state
//!   has none), that every voter learns by applying it and keeps in
//!   `raft-group.json` (`{mesh, node, group}`; a directory of another pair
//!   is refused). Deciding it in the log, not at `initialize()`, gives the
//!   three voters the same id even when both members initialise a new pair
//!   at once, and migrates existing groups: a store with a log or vote and
//!   no file is initialised as before, and its first leader names the
//!   group;
//! - an emptied voter starts openraft only once BOTH other voters answer
//!   (`Rpc::Identity`) with the same group id, the same term and the same
//!   leader, the follower holding all the leader applied; it persists that
//!   vote first, so openraft refuses anything older. Or when an operator
//!   confirms ([`Pair::confirm_empty_store`]). A member never initialises
//!   while a peer reports a group; a brand-new pair (at least one peer
//!   answers, none knows a group) starts as before. While it waits,
//!   [`RoleView::waiting`] says why (and `Pair::start` has returned).
//!
//! openraft's leader would panic on a follower whose log went back
//! (`loosen-follower-log-revert` is enabled for this case only: the
//! emptied voter rejoins after the rule above).
//!
//! ## Operator control: maintenance and switchover
//!
//! [`Pair::set_maintenance`] puts a member in maintenance (replicated in
//! `PairState::maintenance`, `#[serde(default)]` for old snapshots): it is
//! never granted the role, and an active member in maintenance releases
//! ([`ReleaseReason::Maintenance`]) as soon as the other member is
//! eligible, whatever the flap hold. Putting the active in maintenance is
//! refused while the other member could not take the role ("no healthy
//! peer to take the role"). [`Pair::switchover`] on the active releases
//! (reason `Requested`) after checking that a leader is known ("no
//! quorum") and that the other member is eligible ("no healthy peer");
//! the leader grants the other member after `grace`, with the next epoch
//! (the released member just lost the role, and the flap hold keeps it
//! from being chosen back). [`RoleView::maintenance`] shows the set.
//!
//! ## Code map
//!
//! - `types`, `state`: requests, responses, [`PairState`] and its pure
//!   apply rules.
//! - `decide`: the pure role decision.
//! - `lease`: the [`Lease`] deadline, on a [`LeaseClock`] (BOOTTIME; tests
//!   inject [`TokioClock`]).
//! - `timing`: [`Timing`] and the safety inequality.
//! - `store`: log + vote (`raft-log.bin`, `raft-vote.json`), state
//!   machine snapshot (`raft-snapshot.json`) and group identity
//!   (`raft-group.json`) under the data directory.
//! - `network`: the [`Transport`] trait, openraft's network over it, the
//!   pre-vote rule (`network::prevote`), and the TCP transport
//!   ([`network::tcp`]: hello, source-IP check, framing with bodies read
//!   as they arrive and a 1 MiB limit, at most 16 connections waiting for
//!   their hello; [`network::tcp::decode_frame`] is the pure frame decoder
//!   a fuzz target calls).
//! - `router`: the in-process fault-injecting transport for tests.
//! - `peer`: [`Peer`], how to reach a voter.
//! - `metrics`: [`PairMetrics`] and the counters behind it.
//! - `pair`: [`Pair`], the cheap handle on the task that ties it together
//!   (a closed `Command` enum to one owner), and its start-up.
//! - `pair::config`: [`PairConfig`] and its validation.
//! - `pair::boot`: an emptied store asks the other voters before openraft
//!   starts.
//! - `pair::view`: [`RoleView`], what the services see.
//! - `pair::driver`: the task's loop, the only owner of the openraft
//!   instance, lease and view: gathers inputs, asks the pure rules, carries
//!   their answers out.
//! - `pair::driver::proposals`: the proposals it spawns (renew, health,
//!   grant, release, probe, group id, maintenance, and the pre-vote) and
//!   what it does with their outcomes.
//! - `pair::rules`: the pure timing rules: when a member stands for
//!   election, when the leader may next grant, the witness's rescue and
//!   stepping aside.
//!
//! **Architecture invariant**: `network` depends on `error`, `peer`,
//! `metrics`, `types` and two read-only views of `store` (the log's tail
//! for pre-vote answers, the group id cell for identity answers), never on
//! `pair`; `pair` drives the network.

#![forbid(unsafe_code)]

pub mod decide;
mod error;
mod lease;
mod metrics;
pub mod network;
mod pair;
mod peer;
pub mod router;
mod state;
mod store;
mod timing;
mod types;

pub use decide::decide;
pub use decide::Action;
pub use decide::DecisionInput;
pub use decide::MemberStatus;
pub use decide::ReleaseReason;
pub use error::CallError;
pub use error::ProposeError;
pub use error::RaftError;
pub use lease::BootClock;
pub use lease::Lease;
pub use lease::LeaseClock;
pub use lease::TokioClock;
pub use metrics::PairMetrics;
pub use network::tcp::Hello;
pub use network::tls::RaftTls;
pub use network::Transport;
pub use pair::Pair;
pub use pair::PairConfig;
pub use pair::RoleView;
pub use peer::Peer;
pub use state::Effect;
pub use state::PairState;
pub use store::GROUP_FILE;
pub use store::LOG_FILE;
pub use store::SNAPSHOT_FILE;
pub use store::VOTE_FILE;
pub use timing::Timing;
pub use types::is_member;
pub use types::other_member;
pub use types::Health;
pub use types::Incarnation;
pub use types::NodeId;
pub use types::Request;
pub use types::Response;
pub use types::TypeConfig;
pub use types::MEMBERS;
pub use types::MEMBER_A;
pub use types::MEMBER_B;
pub use types::NO_INCARNATION;
pub use types::VOTERS;
pub use types::WITNESS;
