//! Elections as the pair task runs them: when this node stands (asking
//! the pure `rules::stand_at`), the pre-vote and its answers, the grace
//! base, the witness's rescue of a member behind its log and its stepping
//! aside afterwards.

use super::*;

impl Driver {
    /// What [`rules::stand_at`] decides on, as observed now.
    pub(super) fn stand_input(&self) -> StandInput {
        StandInput {
            me: self.me,
            state: self.metrics.state,
            term: self.metrics.current_term,
            leader: self.metrics.current_leader,
            heard: self.watch.heard(),
            started_at: self.started_at,
            led_until: self.led_until,
            last_stand: self.last_stand,
            stand_after: self.stand_after,
            stand_retry: self.stand_retry,
        }
    }

    /// Stands for election on its own if [`rules::stand`] says so now:
    /// after a pre-vote, unless the leader it knows is the witness.
    ///
    /// The pre-vote (see `network::prevote`) keeps a member that cannot
    /// win from raising its term: cut off from both others, it would stand
    /// every `stand_retry`, and its higher term would unseat the leader
    /// when the cut heals. The witness leads only to rescue a member that
    /// is behind its log and steps aside at once (no heartbeats): a member
    /// whose leader is the witness stands without asking, as before (the
    /// witness is not a leader worth keeping, and if the member is still
    /// behind, its refused vote is what makes the witness stand again).
    pub(super) async fn stand(&mut self) {
        let now = Instant::now();
        // The deadline was computed before the wait: a leader may have been
        // heard since.
        let Some(stand) = rules::stand(&self.stand_input(), now) else {
            return;
        };
        self.last_stand = Some(now);
        self.stand_retry = self.timing.stand_retry(new_incarnation());
        if self.pre_vote_inflight {
            // The previous round has not answered yet: this one is skipped
            // (and `last_stand` moved, so the timer does not spin).
            return;
        }
        if self.metrics.current_leader == Some(WITNESS)
            && self.metrics.state != ServerState::Learner
        {
            self.log_stand(
                stand,
                "standing for election (the witness leads: no pre-vote)",
            );
            if let Err(e) = self.raft.trigger().elect().await {
                tracing::warn!(error = %e, "election trigger");
            }
            return;
        }
        let me = self.me;
        let term = self.metrics.current_term;
        let last_log_id = self.tail.last_log_id();
        let transport = self.transport.clone();
        let timeout = self.timing.rpc_timeout;
        self.pre_vote_inflight = true;
        self.spawn(async move {
            let answers = pre_vote(transport, me, term, last_log_id, timeout).await;
            Outcome::PreVote {
                stand,
                asked_at: now,
                answers,
            }
        });
    }

    pub(super) fn log_stand(&self, stand: Stand, what: &str) {
        match stand {
            Stand::First { silent } => tracing::info!(
                term = self.metrics.current_term,
                leader = ?self.metrics.current_leader,
                silent = ?silent,
                "no leader heard; {what}"
            ),
            Stand::Again => tracing::debug!(term = self.metrics.current_term, "again: {what}"),
        }
    }

    /// A pre-vote answered: stand if a voter said yes and no leader was
    /// heard since it was asked.
    pub(super) fn on_pre_vote(&mut self, stand: Stand, asked_at: Instant, answers: PreVoteAnswers) {
        self.pre_vote_inflight = false;
        let input = self.stand_input();
        if rules::heard_base(&input) > asked_at || rules::stand_at(&input).is_none() {
            tracing::debug!("a leader was heard during the pre-vote; not standing");
            return;
        }
        if !answers.granted() {
            self.counters.bump_stands_refused();
            self.log_stand(
                stand,
                &format!("not standing: no other voter would vote for this member now ({answers})"),
            );
            return;
        }
        if self.metrics.state == ServerState::Learner {
            // No membership yet: the question was the witness's signal to
            // rescue this member (see `rules::stand_at`).
            self.log_stand(
                stand,
                &format!("no membership yet: asked the others, not standing ({answers})"),
            );
            return;
        }
        self.log_stand(stand, &format!("standing for election ({answers})"));
        let raft = self.raft.clone();
        tokio::spawn(async move {
            if let Err(e) = raft.trigger().elect().await {
                tracing::warn!(error = %e, "election trigger");
            }
        });
    }

    /// When the leader may next grant (see [`rules::grace_at`]).
    pub(super) fn grace_at(&self) -> Option<Instant> {
        rules::grace_at(
            self.am_leader(),
            self.applied.state.epoch,
            self.applied.local.renewed_at,
            self.timing.grace,
            Instant::now(),
        )
    }

    /// Witness: stands to rescue a member behind its log, if
    /// [`rules::rescue`] says so now.
    pub(super) async fn rescue(&mut self) {
        let now = Instant::now();
        let Some(rescue) = rules::rescue(self.leading(), self.last_rescue, now, &self.timing)
        else {
            return;
        };
        match rescue {
            Rescue::Again => tracing::debug!("witness stands again for a member behind its log"),
            Rescue::First => tracing::warn!(
                "witness stands once: a member is behind its log and no leader is heard"
            ),
        }
        self.last_rescue = Some(now);
        if let Err(e) = self.raft.trigger().elect().await {
            tracing::warn!(error = %e, "witness election trigger");
        }
    }

    /// Witness: heartbeats off while it leads, back on when it no longer
    /// does (see [`rules::witness_steps_aside`]).
    pub(super) fn witness_steps_aside(&mut self) {
        match rules::witness_steps_aside(self.leading(), self.stepping_aside) {
            Some(Heartbeats::Stop) => {
                tracing::warn!(
                    term = self.metrics.current_term,
                    "witness leads to bring a member up to date; stepping aside"
                );
                self.raft.runtime_config().heartbeat(false);
                self.stepping_aside = true;
            }
            Some(Heartbeats::Resume) => {
                tracing::info!("witness stepped aside");
                self.raft.runtime_config().heartbeat(true);
                self.stepping_aside = false;
            }
            None => {}
        }
    }
}
