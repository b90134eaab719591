//! [`Arm`] for [`FakeArm`]: each call against the in-memory state, following the ARM contract where the handlers depend on it.

use super::*;

#[async_trait]
impl Arm for FakeArm {
    fn rate_limits(&self) -> RateLimits {
        self.lock().limits
    }

    fn rate_limits_for(&self, subscription: &str) -> RateLimits {
        self.lock()
            .limits_by_subscription
            .get(&subscription.to_ascii_lowercase())
            .copied()
            .unwrap_or_default()
    }

    /// As the real client: the calls a handler decided to make come off the reading.
    fn debit(&self, subscription: &str, reads: u32, writes: u32, deletes: u32) {
        if let Some(limits) = self
            .lock()
            .limits_by_subscription
            .get_mut(&subscription.to_ascii_lowercase())
        {
            limits.debit(reads, writes, deletes);
        }
    }

    async fn get_vm(&self, id: &ResourceId) -> Result<Option<VirtualMachine>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::GET_VM, id.as_str())?;
        Ok(s.vms.get(id).cloned())
    }

    async fn list_vms(&self, scope: &VmScope) -> Result<Vec<VirtualMachine>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::LIST_VMS, &scope_label(scope))?;
        Ok(s.vms
            .iter()
            .filter(|(id, _)| scope.contains(id))
            .map(|(_, vm)| vm.clone())
            .collect())
    }

    async fn list_disks(&self, scope: &VmScope) -> Result<Vec<Disk>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::LIST_DISKS, &scope_label(scope))?;
        Ok(s.disks
            .iter()
            .filter(|(id, _)| scope.contains(id))
            .map(|(_, disk)| disk.clone())
            .collect())
    }

    async fn get_disk(&self, id: &ResourceId) -> Result<Option<Disk>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::GET_DISK, id.as_str())?;
        Ok(s.disks.get(id).cloned())
    }

    async fn put_collection(
        &self,
        id: &ResourceId,
        body: &RestorePointCollection,
    ) -> Result<RestorePointCollection, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::PUT_COLLECTION, id.as_str())?;
        if body.location.is_none() {
            return Err(arm_error(
                op::PUT_COLLECTION,
                400,
                "InvalidParameter",
                "location is required",
            ));
        }
        if let Some(existing) = s.collections.get_mut(id) {
            // Only tags may change on an existing collection.
            existing.tags = body.tags.clone();
            return Ok(existing.clone());
        }
        let source = body.source_id().map(ResourceId::parse);
        match source {
            Some(Ok(src)) => {
                let known = s.vms.contains_key(&src) || s.collections.contains_key(&src);
                if !known {
                    return Err(not_found(op::PUT_COLLECTION, &src));
                }
            }
            _ => {
                return Err(arm_error(
                    op::PUT_COLLECTION,
                    400,
                    "InvalidParameter",
                    "properties.source.id is required",
                ))
            }
        }
        let mut c = body.clone();
        c.id = Some(id.to_string());
        c.name = id.name().map(str::to_string);
        c.kind = Some("Microsoft.Compute/restorePointCollections".into());
        c.properties
            .get_or_insert_with(Default::default)
            .provisioning_state = Some("Succeeded".into());
        s.collections.insert(id.clone(), c.clone());
        Ok(c)
    }

    async fn get_collection(
        &self,
        id: &ResourceId,
        expand_points: bool,
    ) -> Result<Option<RestorePointCollection>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::GET_COLLECTION, id.as_str())?;
        let Some(mut c) = s.collections.get(id).cloned() else {
            return Ok(None);
        };
        if expand_points {
            c.properties
                .get_or_insert_with(Default::default)
                .restore_points = Some(Self::points_of(&s, id));
        }
        Ok(Some(c))
    }

    async fn list_collections(
        &self,
        subscription: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        let mut s = self.lock();
        self.enter(
            &mut s,
            op::LIST_COLLECTIONS,
            &format!("/subscriptions/{subscription}"),
        )?;
        Ok(s.collections
            .iter()
            .filter(|(id, _)| id.subscription().eq_ignore_ascii_case(subscription))
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn list_collections_in_group(
        &self,
        subscription: &str,
        resource_group: &str,
    ) -> Result<Vec<RestorePointCollection>, ArmError> {
        let scope = VmScope::ResourceGroup {
            subscription: subscription.to_string(),
            resource_group: resource_group.to_string(),
        };
        let mut s = self.lock();
        self.enter(&mut s, op::LIST_COLLECTIONS, &scope_label(&scope))?;
        Ok(s.collections
            .iter()
            .filter(|(id, _)| scope.contains(id))
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn delete_collection(&self, id: &ResourceId) -> Result<Accepted<()>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::DELETE_COLLECTION, id.as_str())?;
        if s.collections.remove(id).is_none() {
            return Ok(accepted(204));
        }
        s.points.retain(|p, _| p.parent().as_ref() != Some(id));
        Ok(accepted(202))
    }

    async fn create_restore_point(
        &self,
        id: &ResourceId,
        body: &RestorePoint,
    ) -> Result<Accepted<RestorePoint>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::PUT_POINT, id.as_str())?;
        let collection = id.parent().expect("restore point id has a parent");
        if !s.collections.contains_key(&collection) {
            return Err(arm_error(
                op::PUT_POINT,
                404,
                "ParentResourceNotFound",
                &format!("Parent resource '{collection}' not found."),
            ));
        }
        if s.points.contains_key(id) {
            return Err(arm_error(
                op::PUT_POINT,
                409,
                "OperationNotAllowed",
                "Properties of an existing restore point cannot be updated.",
            ));
        }
        let source = body.source_restore_point().map(ResourceId::parse);
        let replication = match &source {
            Some(Ok(src)) => {
                if !s.points.contains_key(src) {
                    return Err(not_found(op::PUT_POINT, src));
                }
                vec![0, 0]
            }
            Some(Err(e)) => {
                return Err(arm_error(
                    op::PUT_POINT,
                    400,
                    "InvalidParameter",
                    &e.to_string(),
                ))
            }
            None => Vec::new(),
        };
        if source.is_none() && !s.allow_concurrent_creates {
            if let Some(vm) = Self::vm_of_collection(&s, &collection) {
                let busy = s.points.iter().any(|(pid, p)| {
                    pid.parent()
                        .is_some_and(|c| Self::vm_of_collection(&s, &c).as_ref() == Some(&vm))
                        && p.source_restore_point().is_none()
                        && !p.provisioning_state().is_final()
                });
                if busy {
                    return Err(arm_error(
                        op::PUT_POINT,
                        409,
                        "Conflict",
                        "RestorePoint creation failed since a concurrent 'Create RestorePoint' operation was triggered on the VM.",
                    ));
                }
            }
        }
        let state = s
            .next_states
            .pop_front()
            .unwrap_or_else(|| "Creating".to_string());
        // Like Azure, a point records the VM as it was (here: just its location).
        let metadata = Self::vm_of_collection(&s, &collection)
            .and_then(|vm| s.vms.get(&vm))
            .and_then(|vm| vm.location.clone())
            .map(|location| serde_json::json!({ "location": location }));
        let mut p = body.clone();
        p.id = Some(id.to_string());
        p.name = id.name().map(str::to_string);
        let props = p.properties.get_or_insert_with(Default::default);
        props.provisioning_state = Some(state);
        // A copy's request may carry per-disk encryption in `sourceMetadata`: kept, so tests
        // can read what was asked for.
        props.source_metadata =
            metadata.or_else(|| body.properties.as_ref()?.source_metadata.clone());
        props.time_created = Some(s.now.unwrap_or_else(default_now));
        props.instance_view = Some(instance_view(id, &replication));
        s.points.insert(id.clone(), p.clone());
        if std::mem::take(&mut s.lose_next_put_answer) {
            // The retry of the same PUT: the point exists now.
            return Err(arm_error(
                op::PUT_POINT,
                409,
                "OperationNotAllowed",
                "Properties of an existing restore point cannot be updated.",
            ));
        }
        let mut acc = accepted(201);
        acc.body = Some(without_instance_view(p));
        Ok(acc)
    }

    async fn get_restore_point(
        &self,
        id: &ResourceId,
        instance_view: bool,
    ) -> Result<Option<RestorePoint>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::GET_POINT, id.as_str())?;
        Ok(s.points.get(id).cloned().map(|p| {
            if instance_view {
                p
            } else {
                without_instance_view(p)
            }
        }))
    }

    async fn poll_restore_point(
        &self,
        id: &ResourceId,
        instance_view: bool,
    ) -> Result<(Option<RestorePoint>, Option<Duration>), ArmError> {
        let point = self.get_restore_point(id, instance_view).await?;
        Ok((point, self.lock().poll_retry_after.pop_front()))
    }

    async fn delete_restore_point(&self, id: &ResourceId) -> Result<Accepted<()>, ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::DELETE_POINT, id.as_str())?;
        match s.points.remove(id) {
            Some(_) => Ok(accepted(202)),
            None => Ok(accepted(204)),
        }
    }

    /// Azure's rules for a restored disk, as the emulator models them (docs/emulator-arm.md):
    /// `Restore` from a disk restore point of a point that succeeded and, for a copy, has fully
    /// replicated; an existing disk of the same source is the same disk (200), another source is
    /// a `creationData` change (409).
    async fn create_disk(&self, id: &ResourceId, body: &serde_json::Value) -> Result<(), ArmError> {
        let stall = {
            let mut s = self.lock();
            self.enter(&mut s, op::PUT_DISK, id.as_str())?;
            let cd = &body["properties"]["creationData"];
            let source = cd["sourceResourceId"].as_str().unwrap_or_default();
            let refuse =
                |status, code, msg: String| Err(arm_error(op::PUT_DISK, status, code, &msg));
            if let Some(existing) = s.disks.get(id) {
                let same = existing
                    .properties
                    .as_ref()
                    .and_then(|p| p.creation_data.as_ref())
                    .and_then(|c| c.source_resource_id.as_deref())
                    .is_some_and(|x| x.eq_ignore_ascii_case(source));
                return if same {
                    Ok(())
                } else {
                    refuse(
                        409,
                        "PropertyChangeNotAllowed",
                        "Changing property 'creationData' is not allowed.".into(),
                    )
                };
            }
            if !cd["createOption"]
                .as_str()
                .is_some_and(|o| o.eq_ignore_ascii_case("Restore"))
            {
                return refuse(
                    400,
                    "InvalidParameter",
                    "createOption must be 'Restore'".into(),
                );
            }
            let point_id = source
                .to_ascii_lowercase()
                .find("/diskrestorepoints/")
                .and_then(|i| ResourceId::parse(&source[..i]).ok());
            let Some(point) = point_id.as_ref().and_then(|p| s.points.get(p)) else {
                return refuse(
                    404,
                    "ResourceNotFound",
                    format!("The disk restore point '{source}' was not found."),
                );
            };
            let props = point.properties.clone().unwrap_or_default();
            let state = props.provisioning_state.clone().unwrap_or_default();
            if !state.eq_ignore_ascii_case("Succeeded") {
                return refuse(409, "OperationNotAllowed", format!(
                    "The restore point '{}' is in state '{state}': a disk can be restored only from a restore point that succeeded.",
                    point_id.as_ref().map(ResourceId::as_str).unwrap_or_default()
                ));
            }
            let lowest = props
                .instance_view
                .as_ref()
                .and_then(|iv| iv.disk_restore_points.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|d| d.replication_status.as_ref()?.completion_percent)
                .min();
            if let Some(pct) = lowest.filter(|p| *p < 100) {
                return refuse(409, "OperationNotAllowed", format!(
                    "The restore point is still being copied ({pct}%): it can be used to restore only after every disk restore point has replicated."
                ));
            }
            let disk = Disk {
                id: Some(id.to_string()),
                name: id.name().map(str::to_string),
                location: body["location"].as_str().map(str::to_string),
                tags: serde_json::from_value(body["tags"].clone()).ok(),
                sku: body["sku"]["name"]
                    .as_str()
                    .map(|n| crate::azure::models::DiskSku {
                        name: Some(n.to_string()),
                    }),
                properties: Some(DiskProperties {
                    creation_data: Some(crate::azure::models::DiskCreationData {
                        create_option: Some("Restore".into()),
                        source_resource_id: Some(source.to_string()),
                    }),
                    provisioning_state: Some("Succeeded".into()),
                    ..Default::default()
                }),
            };
            s.disks.insert(id.clone(), disk);
            std::mem::take(&mut s.stall_next_disk_put)
        };
        if stall {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn delete_disk(&self, id: &ResourceId) -> Result<(), ArmError> {
        let mut s = self.lock();
        self.enter(&mut s, op::DELETE_DISK, id.as_str())?;
        s.disks.remove(id);
        Ok(())
    }
}
