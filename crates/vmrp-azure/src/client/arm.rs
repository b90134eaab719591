//! [`Arm`] for [`ArmClient`]: each trait call as its ARM path, API version, type checks and operation.

use super::*;

#[async_trait]
impl Arm for ArmClient {
    async fn get_vm(&self, id: &ResourceId) -> Result<Option<VirtualMachine>, ArmError> {
        let op = ArmOperation::GetVm;
        Self::expect_type(op, id, "Microsoft.Compute/virtualMachines")?;
        self.get_optional(op, self.url_for(id.as_str(), API_VERSION, &[]))
            .await
    }

    async fn list_vms(&self, scope: &VmScope) -> Result<Vec<VirtualMachine>, ArmError> {
        let op = ArmOperation::ListVms;
        let path = scope_path(op, scope, "virtualMachines")?;
        self.list_all(op, self.url_for(&path, API_VERSION, &[]))
            .await
    }

    async fn list_disks(&self, scope: &VmScope) -> Result<Vec<Disk>, ArmError> {
        let op = ArmOperation::ListDisks;
        let path = scope_path(op, scope, "disks")?;
        self.list_all(op, self.url_for(&path, DISKS_API_VERSION, &[]))
            .await
    }

    async fn get_disk(&self, id: &ResourceId) -> Result<Option<Disk>, ArmError> {
        let op = ArmOperation::GetDisk;
        Self::expect_type(op, id, "Microsoft.Compute/disks")?;
        self.get_optional(op, self.url_for(id.as_str(), DISKS_API_VERSION, &[]))
            .await
    }

    async fn put_collection(
        &self,
        id: &ResourceId,
        body: &RestorePointCollection,
    ) -> Result<RestorePointCollection, ArmError> {
        let op = ArmOperation::PutCollection;
        Self::expect_type(op, id, "Microsoft.Compute/restorePointCollections")?;
        Self::not_azure_backup(op, id)?;
        let url = self.url_for(id.as_str(), API_VERSION, &[]);
        self.send(op, url, Some(Self::body_of(op, body)?))
            .await?
            .json(op)
    }

    async fn get_collection(
        &self,
        id: &ResourceId,
        expand_points: bool,
    ) -> Result<Option<RestorePointCollection>, ArmError> {
        let op = ArmOperation::GetCollection;
        Self::expect_type(op, id, "Microsoft.Compute/restorePointCollections")?;
        let extra: &[(&str, &str)] = if expand_points {
            &[("$expand", "restorePoints")]
        } else {
            &[]
        };
        self.get_optional(op, self.url_for(id.as_str(), API_VERSION, extra))
            .await
    }

    async fn list_collections(
        &self,
        subscription: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        let op = ArmOperation::ListCollections;
        check_segment(op, "subscription", subscription)?;
        let url = self.url_for(
            &format!(
                "/subscriptions/{subscription}/providers/Microsoft.Compute/restorePointCollections"
            ),
            API_VERSION,
            &[],
        );
        self.list_all(op, url).await
    }

    async fn list_collections_in_group(
        &self,
        subscription: &str,
        resource_group: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        let op = ArmOperation::ListCollections;
        check_segment(op, "subscription", subscription)?;
        check_segment(op, "resource group", resource_group)?;
        let url = self.url_for(
            &format!(
                "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/restorePointCollections"
            ),
            API_VERSION,
            &[],
        );
        self.list_all(op, url).await
    }

    async fn delete_collection(&self, id: &ResourceId) -> Result<Accepted<()>, ArmError> {
        let op = ArmOperation::DeleteCollection;
        Self::expect_type(op, id, "Microsoft.Compute/restorePointCollections")?;
        Self::not_azure_backup(op, id)?;
        self.delete(op, id).await
    }

    async fn create_restore_point(
        &self,
        id: &ResourceId,
        body: &RestorePoint,
    ) -> Result<Accepted<RestorePoint>, ArmError> {
        let op = ArmOperation::PutRestorePoint;
        Self::expect_type(
            op,
            id,
            "Microsoft.Compute/restorePointCollections/restorePoints",
        )?;
        Self::not_azure_backup(op, id)?;
        let url = self.url_for(id.as_str(), API_VERSION, &[]);
        let rsp = self.send(op, url, Some(Self::body_of(op, body)?)).await?;
        let point = if rsp.body.is_empty() {
            None
        } else {
            Some(rsp.json::<RestorePoint>(op)?)
        };
        Ok(Accepted {
            status: rsp.status,
            body: point,
            lro: rsp.lro_handle(),
        })
    }

    async fn get_restore_point(
        &self,
        id: &ResourceId,
        instance_view: bool,
    ) -> Result<Option<RestorePoint>, ArmError> {
        let op = ArmOperation::GetRestorePoint;
        Self::expect_type(
            op,
            id,
            "Microsoft.Compute/restorePointCollections/restorePoints",
        )?;
        let extra: &[(&str, &str)] = if instance_view {
            &[("$expand", "instanceView")]
        } else {
            &[]
        };
        self.get_optional(op, self.url_for(id.as_str(), API_VERSION, extra))
            .await
    }

    async fn poll_restore_point(
        &self,
        id: &ResourceId,
        instance_view: bool,
    ) -> Result<(Option<RestorePoint>, Option<std::time::Duration>), ArmError> {
        let op = ArmOperation::GetRestorePoint;
        Self::expect_type(
            op,
            id,
            "Microsoft.Compute/restorePointCollections/restorePoints",
        )?;
        let extra: &[(&str, &str)] = if instance_view {
            &[("$expand", "instanceView")]
        } else {
            &[]
        };
        match self
            .send(op, self.url_for(id.as_str(), API_VERSION, extra), None)
            .await
        {
            Ok(rsp) => Ok((Some(rsp.json(op)?), http::retry_after_from(&rsp.headers))),
            Err(e) if e.is_not_found() => Ok((None, None)),
            Err(e) => Err(e),
        }
    }

    async fn delete_restore_point(&self, id: &ResourceId) -> Result<Accepted<()>, ArmError> {
        let op = ArmOperation::DeleteRestorePoint;
        Self::expect_type(
            op,
            id,
            "Microsoft.Compute/restorePointCollections/restorePoints",
        )?;
        Self::not_azure_backup(op, id)?;
        self.delete(op, id).await
    }

    async fn create_disk(&self, id: &ResourceId, body: &serde_json::Value) -> Result<(), ArmError> {
        let op = ArmOperation::PutDisk;
        Self::expect_type(op, id, "Microsoft.Compute/disks")?;
        self.put_json(op, id, DISKS_API_VERSION, body)
            .await
            .map(|_| ())
    }

    async fn delete_disk(&self, id: &ResourceId) -> Result<(), ArmError> {
        // The inherent method (one DELETE path for `vmrp restore` and the drills).
        ArmClient::delete_disk(self, id).await
    }

    fn rate_limits(&self) -> RateLimits {
        self.inner
            .rate_limits
            .lock()
            .map(|b| b.last)
            .unwrap_or_default()
    }

    fn debit(&self, subscription: &str, reads: u32, writes: u32, deletes: u32) {
        if let Ok(mut b) = self.inner.rate_limits.lock() {
            if let Some(limits) = b
                .by_subscription
                .get_mut(&subscription.to_ascii_lowercase())
            {
                limits.debit(reads, writes, deletes);
            }
        }
    }

    fn rate_limits_for(&self, subscription: &str) -> RateLimits {
        self.inner
            .rate_limits
            .lock()
            .ok()
            .and_then(|b| {
                b.by_subscription
                    .get(&subscription.to_ascii_lowercase())
                    .copied()
            })
            .unwrap_or_default()
    }
}
