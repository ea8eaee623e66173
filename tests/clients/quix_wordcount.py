"""A quixstreams stateful word count, run by test_quixstreams.py as a subprocess in its own
virtualenv (quixstreams pins confluent-kafka below the tests' 2.16.1; scripts/test.sh makes
target/quix-venv for it).

Reads lines from the input topic, splits them into words, regroups them by word (a
repartition topic quixstreams creates), counts each word in RocksDB state (backed by a
changelog topic quixstreams creates, cleanup.policy=compact) and writes {"word", "count"}
keyed by the word to the output topic. Runs until SIGTERM, which quixstreams handles by
committing its checkpoint and closing cleanly.

Usage: python quix_wordcount.py BOOTSTRAP GROUP INPUT OUTPUT STATE_DIR
"""

import sys

from quixstreams import Application


def main():
    bootstrap, group, input_name, output_name, state_dir = sys.argv[1:6]
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        commit_interval=0.5,
        loglevel="DEBUG",
        request_timeout=15,
        topic_create_timeout=30,
    )
    lines = app.topic(input_name, value_deserializer="str", key_deserializer="str")
    output = app.topic(output_name, value_serializer="json", key_serializer="str")

    def count(row, state):
        n = state.get("count", 0) + 1
        state.set("count", n)
        return {"word": row["word"], "count": n}

    sdf = app.dataframe(lines)
    sdf = sdf.apply(lambda line: [{"word": w} for w in line.split()], expand=True)
    sdf = sdf.group_by("word", name="by-word")
    sdf = sdf.apply(count, stateful=True)
    sdf.to_topic(output)
    app.run()


if __name__ == "__main__":
    main()
