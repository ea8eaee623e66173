// Shared by `benches/zero_copy.rs` and `tests/zero_copy.rs`: runs one real shard in-process,
// sends it Produce and Fetch request frames through the same dispatcher the sockets use, and
// follows record bytes by address and by the engine's copy counters.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::Compression;
use spate_client::{encode_batch, OutRecord};
use spate_engine::copies::copy_counts;
use spate_engine::registry::ShardLogs;
use spate_net::metadata::MetadataStore;
use spate_net::{dispatch, Cluster, NetConfig, Outcome, Shard};

#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub record_bytes_produced: u64,
    /// User-space copies of record bytes on the produce path, per byte produced.
    pub produce_copies_per_byte: f64,
    /// Of those, the share that is the rewrite of partial tail blocks.
    pub produce_tail_copies_per_byte: f64,
    pub record_bytes_fetched: u64,
    /// Record bytes in Fetch responses that are not the produce request's own memory.
    pub fetch_cache_copies_per_byte: f64,
    /// After a restart (no cache): copies between the engine and the socket, per byte.
    pub fetch_disk_copies_per_byte: f64,
    /// After a restart: the disk read copy (DMA buffer to `Bytes`), per byte.
    pub disk_read_copies_per_byte: f64,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn frame<R: Encodable + HeaderVersion>(key: i16, version: i16, corr: i32, req: &R) -> BytesMut {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(sb("bench")))
        .encode(&mut buf, R::header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    buf
}

fn respond(o: Outcome) -> Vec<Bytes> {
    match o {
        Outcome::Respond(c) => c,
        Outcome::Silent => Vec::new(),
        Outcome::Close(why) => panic!("closed: {why}"),
    }
}

/// Bytes of `chunks` that lie inside one of `buffers` (start address to end address).
fn shared_bytes(chunks: &[Bytes], buffers: &std::collections::BTreeMap<usize, usize>) -> u64 {
    chunks
        .iter()
        .filter(|c| {
            let p = c.as_ptr() as usize;
            buffers
                .range(..=p)
                .next_back()
                .is_some_and(|(_, e)| p + c.len() <= *e)
        })
        .map(|c| c.len() as u64)
        .sum()
}

/// Fetches the whole partition: (record bytes, every response chunk, batches).
async fn fetch_all(shard: &Rc<Shard>, end: i64) -> (u64, Vec<Bytes>, u64) {
    let mut offset = 0i64;
    let mut chunks = Vec::new();
    let mut record_bytes = 0u64;
    let mut batches = 0u64;
    let mut corr = 1_000_000;
    while offset < end {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(8 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(sb("zc")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(4 << 20)])]);
        corr += 1;
        let resp = respond(dispatch(shard, frame(1, 11, corr, &req).freeze(), "bench").await);
        let whole: Vec<u8> = resp.iter().flat_map(|c| c.iter().copied()).collect();
        let mut body = Bytes::from(whole[4..].to_vec());
        let _ =
            <ResponseHeader as kafka_protocol::protocol::Decodable>::decode(&mut body, 0).unwrap();
        let r =
            <FetchResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 11).unwrap();
        let records = r.responses[0].partitions[0]
            .records
            .clone()
            .unwrap_or_default();
        assert!(!records.is_empty(), "no progress at offset {offset}");
        record_bytes += records.len() as u64;
        let mut at = 0usize;
        while at + 61 <= records.len() {
            let base = i64::from_be_bytes(records[at..at + 8].try_into().unwrap());
            let len = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
            let delta = i32::from_be_bytes(records[at + 23..at + 27].try_into().unwrap()) as i64;
            offset = base + delta + 1;
            at += 12 + len;
            batches += 1;
        }
        chunks.extend(resp);
    }
    (record_bytes, chunks, batches)
}

#[derive(Default)]
struct Phase {
    produced: u64,
    appended: u64,
    tail: u64,
    fetched: u64,
    copied: u64,
    read: u64,
}

/// `requests` Produce requests, each one batch of `records` records of `value_len` bytes.
pub fn measure(requests: usize, records: usize, value_len: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    {
        let mut store = MetadataStore::open(&data).unwrap();
        store.create_topic("zc", 1, Default::default(), 1).unwrap();
    }
    spate_engine::shard::write_probe_file(&data).unwrap();
    let run = |first: bool| -> Phase {
        let data = data.clone();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(512 * 1024)
            .spawn(move || async move {
                let storage = Rc::new(spate_engine::io::dma::DmaStorage);
                spate_engine::shard::read_probe_file(&*storage, &data)
                    .await
                    .unwrap();
                let store = MetadataStore::open(&data).unwrap();
                let metadata = store.metadata().clone();
                let logs = Rc::new(ShardLogs::new(
                    0,
                    &data,
                    storage,
                    Default::default(),
                    256 << 20,
                ));
                logs.open_assigned(metadata.assigned_to(0, &Default::default()))
                    .await
                    .unwrap();
                let cluster = Cluster::new(
                    NetConfig::default(),
                    1,
                    store,
                    data.clone(),
                    Default::default(),
                );
                let shard = Shard::start(0, cluster, &Shard::mesh(1), logs.clone(), None).unwrap();
                let mut out = Phase::default();
                if first {
                    // Produce, keeping every request buffer alive and noting where it lives.
                    let mut buffers = std::collections::BTreeMap::new();
                    let mut keep = Vec::new();
                    let before = copy_counts();
                    for i in 0..requests {
                        let recs: Vec<OutRecord> = (0..records)
                            .map(|j| OutRecord {
                                key: None,
                                value: Some(Bytes::from(vec![(i + j) as u8; value_len])),
                                headers: vec![],
                                timestamp_ms: 1,
                            })
                            .collect();
                        let batch = encode_batch(&recs, Compression::None).unwrap();
                        out.produced += batch.len() as u64;
                        let req = ProduceRequest::default()
                            .with_acks(1)
                            .with_timeout_ms(5000)
                            .with_topic_data(vec![TopicProduceData::default()
                                .with_name(TopicName(sb("zc")))
                                .with_partition_data(vec![PartitionProduceData::default()
                                    .with_index(0)
                                    .with_records(Some(batch))])]);
                        let f = frame(0, 9, i as i32, &req).freeze();
                        buffers.insert(f.as_ptr() as usize, f.as_ptr() as usize + f.len());
                        keep.push(f.clone());
                        respond(dispatch(&shard, f, "bench").await);
                    }
                    let after = copy_counts();
                    let headers = requests as u64 * spate_engine::frame::FRAME_HEADER_LEN as u64;
                    out.appended = after.appended_bytes - before.appended_bytes - headers;
                    out.tail = after.tail_bytes - before.tail_bytes;
                    let end = logs.get("zc", 0).unwrap().stats().log_end_offset as i64;
                    let (fetched, chunks, batches) = fetch_all(&shard, end).await;
                    // Each batch's first 16 bytes are header fields written fresh, not copied
                    // records: the base offset, the batch length (copied, 4 bytes) and the
                    // partition leader epoch, both as the log holds them.
                    out.fetched = fetched;
                    out.copied = fetched - shared_bytes(&chunks, &buffers) - 16 * batches;
                    drop(keep);
                } else {
                    // After a restart every read comes from disk; the engine's `Bytes` are what
                    // the read returned, and the response holds slices of them.
                    let end = logs.get("zc", 0).unwrap().stats().log_end_offset as i64;
                    let before = copy_counts();
                    let (fetched, chunks, batches) = fetch_all(&shard, end).await;
                    out.read = copy_counts().read_bytes - before.read_bytes;
                    let record_chunks: u64 = chunks
                        .iter()
                        .filter(|c| c.len() > 64)
                        .map(|c| c.len() as u64)
                        .sum();
                    out.fetched = fetched;
                    out.copied = fetched.saturating_sub(record_chunks + 16 * batches);
                }
                logs.close_all().await;
                out
            })
            .unwrap()
            .join()
            .unwrap()
    };
    let p = run(true);
    let d = run(false);
    Figures {
        record_bytes_produced: p.produced,
        produce_copies_per_byte: (p.appended + p.tail) as f64 / p.produced as f64,
        produce_tail_copies_per_byte: p.tail as f64 / p.produced as f64,
        record_bytes_fetched: p.fetched,
        fetch_cache_copies_per_byte: p.copied as f64 / p.fetched as f64,
        fetch_disk_copies_per_byte: d.copied as f64 / d.fetched as f64,
        disk_read_copies_per_byte: d.read as f64 / d.fetched as f64,
    }
}
