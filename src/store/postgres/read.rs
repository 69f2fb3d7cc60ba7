//! The queries behind the views, on PostgreSQL (being written).

use std::ops::ControlFlow;

use super::PgStore;
use crate::store::read::{
    ErrorGroup, ErrorRow, EvaluationRow, ExperimentRow, JudgeTotal, LimitStep, LimitTimeline,
    RepeatSums, RunRow, SampleRow, SampleScores, StreamedReply, SummaryReads,
};
use crate::store::{Reader, StoreError};

impl Reader for PgStore {
    fn summary_reads(&self, _e: &EvaluationRow) -> Result<SummaryReads, StoreError> { todo!() }
    fn experiments(&self) -> Result<Vec<ExperimentRow>, StoreError> { todo!() }
    fn experiment(&self, _name: &str) -> Result<ExperimentRow, StoreError> { todo!() }
    fn experiment_names(&self) -> Result<Vec<String>, StoreError> { todo!() }
    fn latencies(&self, _evaluation_id: i64) -> Result<Vec<u64>, StoreError> { todo!() }
    fn streamed(&self, _evaluation_id: i64) -> Result<Vec<StreamedReply>, StoreError> { todo!() }
    fn errors(&self, _evaluation_id: i64) -> Result<Vec<ErrorRow>, StoreError> { todo!() }
    fn error_groups(&self, _evaluation_id: i64) -> Result<Vec<ErrorGroup>, StoreError> { todo!() }
    fn runs(&self, _evaluation_id: i64) -> Result<Vec<RunRow>, StoreError> { todo!() }
    fn limit_steps(&self, _evaluation_id: i64, _run: u64) -> Result<Vec<LimitStep>, StoreError> { todo!() }
    fn limit_timeline(&self, _evaluation_id: i64) -> Result<LimitTimeline, StoreError> { todo!() }
    fn samples(&self, _evaluation_id: i64, _evaluators: usize) -> Result<Vec<SampleRow>, StoreError> { todo!() }
    fn for_each_sample(&self, _evaluation_id: i64, _evaluators: usize, _each: &mut dyn FnMut(SampleRow) -> ControlFlow<()>) -> Result<(), StoreError> { todo!() }
    fn judge_totals(&self, _evaluation_id: i64) -> Result<Vec<JudgeTotal>, StoreError> { todo!() }
    fn sample_scores(&self, _evaluation_id: i64, _evaluators: usize, _cluster: Option<&str>) -> Result<Vec<SampleScores>, StoreError> { todo!() }
    fn cluster_sums(&self, _evaluation_id: i64, _evaluator: usize, _column: &str) -> Result<Vec<(u64, f64, f64)>, StoreError> { todo!() }
    fn repeat_sums(&self, _evaluation_id: i64, _evaluator: usize, _cluster: Option<&str>) -> Result<Vec<RepeatSums>, StoreError> { todo!() }
}
