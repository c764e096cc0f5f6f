//! `CreateAcls` and `DescribeAcls` (patched in), at version 1: resource pattern types, the
//! oldest version Kafka 4 still serves and the last before flexible encoding.

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

#[derive(Debug)]
pub struct CreateAclsRequest {
    /// The ACLs to create.
    pub creations: Vec<AclCreation>,
}

impl RequestBody for CreateAclsRequest {
    type ResponseBody = CreateAclsResponse;

    const API_KEY: ApiKey = ApiKey::CreateAcls;

    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(1)), ApiVersion(Int16(1)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(2));
}

impl<W> WriteVersionedType<W> for CreateAclsRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        assert_eq!(version.0.0, 1);
        write_versioned_array(writer, version, Some(self.creations.as_slice()))
    }
}

#[derive(Debug)]
pub struct AclCreation {
    /// The resource type (`ResourceType` code).
    pub resource_type: Int8,
    /// The resource name.
    pub resource_name: String_,
    /// The pattern type (`PatternType` code).
    pub resource_pattern_type: Int8,
    /// The principal, e.g. `User:payment-service`.
    pub principal: String_,
    /// The host, `*` for any.
    pub host: String_,
    /// The operation (`AclOperation` code).
    pub operation: Int8,
    /// The permission type (`AclPermissionType` code).
    pub permission_type: Int8,
}

impl<W> WriteVersionedType<W> for AclCreation
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        assert_eq!(version.0.0, 1);
        self.resource_type.write(writer)?;
        self.resource_name.write(writer)?;
        self.resource_pattern_type.write(writer)?;
        self.principal.write(writer)?;
        self.host.write(writer)?;
        self.operation.write(writer)?;
        self.permission_type.write(writer)?;
        Ok(())
    }
}

#[derive(Debug)]
pub struct CreateAclsResponse {
    /// The duration in milliseconds for which the request was throttled due to a quota
    /// violation, or zero if the request did not violate any quota.
    pub throttle_time_ms: Option<Int32>,
    /// One result per creation, in the order asked.
    pub results: Vec<AclCreationResult>,
}

impl<R> ReadVersionedType<R> for CreateAclsResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert_eq!(version.0.0, 1);
        let throttle_time_ms = Some(Int32::read(reader)?);
        let results = read_versioned_array(reader, version)?.unwrap_or_default();
        Ok(Self {
            throttle_time_ms,
            results,
        })
    }
}

#[derive(Debug)]
pub struct AclCreationResult {
    pub error: Option<Error>,
    pub error_message: NullableString,
}

impl<R> ReadVersionedType<R> for AclCreationResult
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert_eq!(version.0.0, 1);
        Ok(Self {
            error: Error::new(Int16::read(reader)?.0),
            error_message: NullableString::read(reader)?,
        })
    }
}

#[derive(Debug)]
pub struct DescribeAclsRequest {
    pub resource_type_filter: Int8,
    /// `None` matches any name.
    pub resource_name_filter: NullableString,
    pub pattern_type_filter: Int8,
    /// `None` matches any principal.
    pub principal_filter: NullableString,
    /// `None` matches any host.
    pub host_filter: NullableString,
    pub operation: Int8,
    pub permission_type: Int8,
}

impl RequestBody for DescribeAclsRequest {
    type ResponseBody = DescribeAclsResponse;

    const API_KEY: ApiKey = ApiKey::DescribeAcls;

    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(1)), ApiVersion(Int16(1)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(2));
}

impl<W> WriteVersionedType<W> for DescribeAclsRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        assert_eq!(version.0.0, 1);
        self.resource_type_filter.write(writer)?;
        self.resource_name_filter.write(writer)?;
        self.pattern_type_filter.write(writer)?;
        self.principal_filter.write(writer)?;
        self.host_filter.write(writer)?;
        self.operation.write(writer)?;
        self.permission_type.write(writer)?;
        Ok(())
    }
}

#[derive(Debug)]
pub struct DescribeAclsResponse {
    pub throttle_time_ms: Option<Int32>,
    pub error: Option<Error>,
    pub error_message: NullableString,
    /// Each resource named in a matching ACL.
    pub resources: Vec<DescribeAclsResource>,
}

impl<R> ReadVersionedType<R> for DescribeAclsResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert_eq!(version.0.0, 1);
        Ok(Self {
            throttle_time_ms: Some(Int32::read(reader)?),
            error: Error::new(Int16::read(reader)?.0),
            error_message: NullableString::read(reader)?,
            resources: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

#[derive(Debug)]
pub struct DescribeAclsResource {
    pub resource_type: Int8,
    pub name: String_,
    pub pattern_type: Int8,
    pub acls: Vec<AclDescription>,
}

impl<R> ReadVersionedType<R> for DescribeAclsResource
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert_eq!(version.0.0, 1);
        Ok(Self {
            resource_type: Int8::read(reader)?,
            name: String_::read(reader)?,
            pattern_type: Int8::read(reader)?,
            acls: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

#[derive(Debug)]
pub struct AclDescription {
    pub principal: String_,
    pub host: String_,
    pub operation: Int8,
    pub permission_type: Int8,
}

impl<R> ReadVersionedType<R> for AclDescription
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert_eq!(version.0.0, 1);
        Ok(Self {
            principal: String_::read(reader)?,
            host: String_::read(reader)?,
            operation: Int8::read(reader)?,
            permission_type: Int8::read(reader)?,
        })
    }
}
