"""The Azure tier, for real: one broker with `[tier] kind = "azure"` on Azurite (Microsoft's
Azure Storage emulator, from npm; its Blob API on a free port of 127.0.0.1, started by the
module and stopped by PID), through object_store's Azure client, and a real consumer:

- a backlog of 1 KiB records to a topic of 1 MiB segments with local.retention.bytes 2 MiB:
  the local copy shrinks to about local retention plus a segment, the container holds the
  rest (exactly the manifest's objects), and a consumer from offset 0 reads every record in
  order with its content, also after a restart of the broker;
- a tier kind Spate does not have is refused at start, naming the kinds it has; an azure tier
  without a container is refused, naming tier.bucket.

The S3 tier's fuller set (SIGKILL at each step, an unreachable tier, retention, corruption)
runs in test_tiered.py against moto; the object store code under them is the same.
"""

import os
import subprocess
import time
import uuid
from pathlib import Path

import confluent_kafka.admin as cka
import pytest

from conftest import SPATE_BIN, Broker, free_port
from tier_util import (MIB, RECORD, BucketView, assert_tier_holds_exactly_its_manifest,
                       consume, produce, wait_until, watermarks)

# Azurite's well-known development account (public, in Microsoft's documentation).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")


class Azurite:
    """Azurite's Blob service on a free port of 127.0.0.1, stopped by PID."""

    def __init__(self, workdir):
        binary = os.environ.get("SPATE_AZURITE_BLOB",
                                "target/azurite/node_modules/.bin/azurite-blob")
        assert Path(binary).exists(), f"no azurite at {binary} (bash scripts/test.sh installs it)"
        self.port = free_port()
        self.log = open(Path(workdir) / "azurite.log", "wb")
        self.proc = subprocess.Popen(
            [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
             "--location", str(Path(workdir) / "data"), "--skipApiVersionCheck", "--silent"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, start_new_session=True)
        from azure.storage.blob import BlobServiceClient
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = BlobServiceClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.url}/{ACCOUNT};")
        deadline = time.monotonic() + 60
        while True:
            log = Path(workdir) / "azurite.log"
            assert self.proc.poll() is None, "azurite exited: " + log.read_text()
            try:
                list(self.service.list_containers())
                break
            except Exception:
                assert time.monotonic() < deadline, "azurite not answering"
                time.sleep(0.2)

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()


class AzureTier(BucketView):
    """A container of its own on the module's Azurite."""

    def __init__(self, azurite):
        self.container = f"spate-{uuid.uuid4().hex[:10]}"
        self.prefix = "brokers/a"
        self.client = azurite.service.create_container(self.container)
        self.env = {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": azurite.url}

    def config(self):
        return ('[tier]\nkind = "azure"\n'
                f'bucket = "{self.container}"\nprefix = "{self.prefix}"\n'
                'interval_ms = 200\ntimeout_ms = 5000\nretries = 1\n')

    def _keys(self, topic):
        return {b.name: b.size
                for b in self.client.list_blobs(name_starts_with=f"{self.prefix}/{topic}-")}

    def read(self, topic, name):
        return self.client.download_blob(f"{self.partition(topic)}/{name}").readall()


@pytest.fixture(scope="module")
def azurite(module_dir):
    a = Azurite(module_dir)
    try:
        yield a
    finally:
        a.stop()


@pytest.fixture
def azure_broker(azurite, tmp_path, request):
    b = Broker(tmp_path)
    b.tier = AzureTier(azurite)
    b.env.update(b.tier.env)
    b.config_path.write_text(b.tier.config())
    request.node._spate_broker = b
    b.start()
    try:
        yield b
    finally:
        b.teardown()


def local_log_bytes(b, topic):
    d = b.data_dir / "topics" / topic / "0"
    return sum(f.stat().st_size for f in d.glob("*.log"))


def test_a_cold_backlog_goes_to_an_azure_container_and_reads_back_in_order(azure_broker):
    b = azure_broker
    a = cka.AdminClient({"bootstrap.servers": b.bootstrap})
    conf = {"segment.bytes": str(MIB), "remote.storage.enable": "true",
            "local.retention.bytes": str(2 * MIB)}
    for f in a.create_topics([cka.NewTopic("cold", 1, 1, config=conf)]).values():
        f.result(15)
    n = 24 * MIB // RECORD
    assert produce(b, "cold", 0, n) == n
    wait_until("the local copy at local retention",
               lambda: local_log_bytes(b, "cold") <= 4 * MIB, 60)
    remote = sum(size for name, size in b.tier.objects("cold").items() if name.endswith(".log"))
    assert remote >= 18 * MIB, remote
    segs = assert_tier_holds_exactly_its_manifest(b, "cold")
    assert segs[0][0] == 0
    assert watermarks(b, "cold") == (0, n)
    consume(b, "cold", 0, n, timeout=120)
    assert f"azure://{b.tier.container}" in b.log()
    b.restart()
    assert watermarks(b, "cold") == (0, n)
    consume(b, "cold", 0, n, timeout=120)


@pytest.mark.parametrize("tier, needle", [
    ('[tier]\nkind = "gcs-nearline"\nbucket = "b"\n', '"s3", "gcs" or "azure"'),
    ('[tier]\nkind = "azure"\n', "tier.bucket, the container's name"),
    ('[tier]\nkind = "gcs"\n', "tier.bucket, the bucket's name"),
])
def test_a_tier_config_spate_cannot_use_is_refused_naming_the_fix(tmp_path, tier, needle):
    config = tmp_path / "spate.toml"
    config.write_text(tier)
    r = subprocess.run([SPATE_BIN, "serve", "--data-dir", str(tmp_path / "data"),
                        "--listen", f"127.0.0.1:{free_port()}", "--config", str(config)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert needle in r.stderr, r.stderr
