//! `FindCoordinator` (version 1) and `OffsetCommit` (version 5) (patched in): enough for a
//! standalone consumer to commit its positions under a group id, without group membership,
//! so that Kafka's tools can show its lag. Both are the last versions before flexible
//! encoding that Kafka 4 still serves.

use std::io::{Read, Write};

use super::{
    ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError, WriteVersionedType,
};
use crate::protocol::api_version::ApiVersionRange;
use crate::protocol::messages::{read_versioned_array, write_versioned_array};
use crate::protocol::{
    api_key::ApiKey,
    api_version::ApiVersion,
    error::Error,
    primitives::*,
    traits::{ReadType, WriteType},
};

/// `key_type` of a group's coordinator.
pub const COORDINATOR_KEY_TYPE_GROUP: i8 = 0;

#[derive(Debug)]
pub struct FindCoordinatorRequest {
    /// The group id.
    pub key: String_,
    /// [`COORDINATOR_KEY_TYPE_GROUP`] (1 is a transactional id).
    pub key_type: Int8,
}

impl RequestBody for FindCoordinatorRequest {
    type ResponseBody = FindCoordinatorResponse;

    const API_KEY: ApiKey = ApiKey::FindCoordinator;

    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(1)), ApiVersion(Int16(1)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(3));
}

impl<W> WriteVersionedType<W> for FindCoordinatorRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        assert_eq!(version.0.0, 1);
        self.key.write(writer)?;
        self.key_type.write(writer)?;
        Ok(())
    }
}

#[derive(Debug)]
pub struct FindCoordinatorResponse {
    pub throttle_time_ms: Option<Int32>,
    pub error: Option<Error>,
    pub error_message: NullableString,
    /// The coordinator's broker id.
    pub node_id: Int32,
    pub host: String_,
    pub port: Int32,
}

impl<R> ReadVersionedType<R> for FindCoordinatorResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert_eq!(version.0.0, 1);
        Ok(Self {
            throttle_time_ms: Some(Int32::read(reader)?),
            error: Error::new(Int16::read(reader)?.0),
            error_message: NullableString::read(reader)?,
            node_id: Int32::read(reader)?,
            host: String_::read(reader)?,
            port: Int32::read(reader)?,
        })
    }
}

#[derive(Debug)]
pub struct OffsetCommitRequest {
    pub group_id: String_,
    /// -1 for a consumer outside group membership.
    pub generation_id: Int32,
    /// Empty for a consumer outside group membership.
    pub member_id: String_,
    pub topics: Vec<OffsetCommitRequestTopic>,
}

impl RequestBody for OffsetCommitRequest {
    type ResponseBody = OffsetCommitResponse;

    const API_KEY: ApiKey = ApiKey::OffsetCommit;

    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(5)), ApiVersion(Int16(5)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(8));
}

impl<W> WriteVersionedType<W> for OffsetCommitRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        assert_eq!(version.0.0, 5);
        self.group_id.write(writer)?;
        self.generation_id.write(writer)?;
        self.member_id.write(writer)?;
        write_versioned_array(writer, version, Some(self.topics.as_slice()))
    }
}

#[derive(Debug)]
pub struct OffsetCommitRequestTopic {
    pub name: String_,
    pub partitions: Vec<OffsetCommitRequestPartition>,
}

impl<W> WriteVersionedType<W> for OffsetCommitRequestTopic
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        assert_eq!(version.0.0, 5);
        self.name.write(writer)?;
        write_versioned_array(writer, version, Some(self.partitions.as_slice()))
    }
}

#[derive(Debug)]
pub struct OffsetCommitRequestPartition {
    pub partition_index: Int32,
    /// The next offset to read.
    pub committed_offset: Int64,
    pub committed_metadata: NullableString,
}

impl<W> WriteVersionedType<W> for OffsetCommitRequestPartition
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        assert_eq!(version.0.0, 5);
        self.partition_index.write(writer)?;
        self.committed_offset.write(writer)?;
        self.committed_metadata.write(writer)?;
        Ok(())
    }
}

#[derive(Debug)]
pub struct OffsetCommitResponse {
    pub throttle_time_ms: Option<Int32>,
    pub topics: Vec<OffsetCommitResponseTopic>,
}

impl<R> ReadVersionedType<R> for OffsetCommitResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert_eq!(version.0.0, 5);
        Ok(Self {
            throttle_time_ms: Some(Int32::read(reader)?),
            topics: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

#[derive(Debug)]
pub struct OffsetCommitResponseTopic {
    pub name: String_,
    pub partitions: Vec<OffsetCommitResponsePartition>,
}

impl<R> ReadVersionedType<R> for OffsetCommitResponseTopic
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert_eq!(version.0.0, 5);
        Ok(Self {
            name: String_::read(reader)?,
            partitions: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

#[derive(Debug)]
pub struct OffsetCommitResponsePartition {
    pub partition_index: Int32,
    pub error: Option<Error>,
}

impl<R> ReadVersionedType<R> for OffsetCommitResponsePartition
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert_eq!(version.0.0, 5);
        Ok(Self {
            partition_index: Int32::read(reader)?,
            error: Error::new(Int16::read(reader)?.0),
        })
    }
}
