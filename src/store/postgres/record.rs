//! What a run records, and the management of experiments, on PostgreSQL;
//! and the run lock.

use std::time::Duration;

use super::db::Target;
use super::PgStore;
use crate::store::writer::{OnCommit, Writer};
use crate::store::{
    Admin, EvaluationMeta, EvaluationStatus, RecordSink, Recorder, RunLock, RunTotals,
    SampleCounts, SampleLookup, StartedEvaluation, StoreError, StoredEvaluation, WriterConfig,
};

/// Takes the run lock of `evaluation` of `experiment`.
pub fn lock(_target: &Target, _experiment: &str, _evaluation: &str) -> Result<RunLock, StoreError> {
    todo!()
}

impl Recorder for PgStore {
    fn is_running(&self, _experiment: &str, _evaluation: &str) -> bool {
        todo!()
    }

    fn find_evaluation(
        &self,
        _experiment: &str,
        _name: &str,
    ) -> Result<Option<StoredEvaluation>, StoreError> {
        todo!()
    }

    fn start_evaluation(
        &mut self,
        _experiment: &str,
        _meta: &EvaluationMeta,
        _now: &str,
    ) -> Result<StartedEvaluation, StoreError> {
        todo!()
    }

    fn sink(&self, _config: WriterConfig) -> Result<Box<dyn RecordSink>, StoreError> {
        todo!()
    }

    fn writer(
        &self,
        config: WriterConfig,
        capacity: usize,
        on_commit: OnCommit,
    ) -> Result<Writer, StoreError> {
        Writer::spawn(self.sink(config)?, capacity, on_commit)
    }

    fn lookup(&self, _evaluation_id: i64) -> Result<Box<dyn SampleLookup>, StoreError> {
        todo!()
    }

    fn cache(&self) -> Result<std::sync::Arc<dyn crate::cache::CacheLookup>, StoreError> {
        todo!()
    }

    fn counts(&self, _evaluation_id: i64) -> Result<SampleCounts, StoreError> {
        todo!()
    }

    fn record_wall(&self, _evaluation_id: i64, _wall_us: u64) -> Result<(), StoreError> {
        todo!()
    }

    fn record_limits(
        &mut self,
        _evaluation_id: i64,
        _run: i64,
        _history: &[(Duration, usize)],
    ) -> Result<(), StoreError> {
        todo!()
    }

    fn record_run(&self, _evaluation_id: i64, _run: i64, _t: &RunTotals) -> Result<(), StoreError> {
        todo!()
    }

    fn finish_evaluation(
        &self,
        _id: i64,
        _status: EvaluationStatus,
        _now: &str,
    ) -> Result<(), StoreError> {
        todo!()
    }
}

impl Admin for PgStore {
    fn delete_experiment(&self, _name: &str) -> Result<u64, StoreError> {
        todo!()
    }

    fn rename_experiment(&self, _from: &str, _to: &str) -> Result<(), StoreError> {
        todo!()
    }

    fn cache_stats(&self) -> Result<crate::cache::CacheStats, StoreError> {
        todo!()
    }

    fn cache_clear(
        &self,
        _older_than: Option<Duration>,
        _model: Option<&str>,
    ) -> Result<u64, StoreError> {
        todo!()
    }

    fn cache_explain_reads(
        &self,
        _experiment: &str,
        _sample: &str,
    ) -> Result<Vec<crate::cache::explain::SampleCache>, StoreError> {
        todo!()
    }
}
