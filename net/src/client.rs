//! A small blocking Kafka client (placeholder module filled in below).
