//! The cluster metadata: the records of the metadata log and the image they build.

mod image;
mod records;

pub use image::{ApplyError, BrokerState, ClusterImage, PartitionImage, TopicImage};
pub use records::{
    decode_batch, encode_batch, BrokerId, BrokerRegistration, DecodeError, Endpoint,
    MetadataRecord, PartitionAssignment, PartitionState, TopicId, NO_LEADER,
};
