//! [`FakeLedger`]: the drill ledger in memory, folding records with the same
//! [`merge`](crate::azure::ledger::merge) the Table client applies, with scripted failures.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::azure::ledger::{merge, table_keys};
use crate::azure::{DrillLedger, DrillRecord, LedgerError};

/// Records by entity keys, and failures to answer the next `record` calls with.
#[derive(Default)]
pub struct FakeLedger {
    records: Mutex<BTreeMap<(String, String), DrillRecord>>,
    failures: Mutex<VecDeque<LedgerError>>,
}

impl FakeLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `record` call fails with `code` (HTTP `status`) and stores nothing.
    pub fn fail_next_record(&self, status: u16, code: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(LedgerError {
                operation: "Update Entity".into(),
                status: Some(status),
                code: code.into(),
                message: "scripted".into(),
            });
    }

    /// Every stored record, by keys.
    pub fn records(&self) -> Vec<DrillRecord> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

#[async_trait]
impl DrillLedger for FakeLedger {
    async fn record(&self, record: &DrillRecord) -> Result<(), LedgerError> {
        if let Some(e) = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
        {
            return Err(e);
        }
        let key = table_keys(&record.vm, &record.region);
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let merged = merge(records.get(&key), record);
        records.insert(key, merged);
        Ok(())
    }

    async fn read_all(&self) -> Result<Vec<DrillRecord>, LedgerError> {
        Ok(self.records())
    }
}
