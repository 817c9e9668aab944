"""What a benchmark run does (`Plan`): its scenarios, sizes, durations and clients."""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = "bench"  # the throughput events; latency events each get a source of their own


@dataclass
class Plan:
    """What one run measures. `sizes` are the events in the log at each point; the worker and
    plugin-key dimensions run at the largest size."""

    sizes: list[int]
    workers: list[int]
    keys: list[int]
    duration: float  # seconds measured per throughput scenario
    warmup: float  # seconds run before measuring
    latency_samples: int
    latency_waiters: int = 4
    latency_pause: float = 0.02  # idle gap between latency samples
    base_workers: int = 16
    batch_count: int = 100
    deadline: float = 1.0  # long-poll deadline of the throughput workers
    processes: int = 2  # load-generator processes
    client: str = "raw"
    blobs: int = 256
    blob_size: int = 1024
    compare_clients: tuple[str, ...] = ("h11", "httpx")  # rerun the base scenario with these
    no_download_variant: bool = True  # rerun the base scenario without downloads
    upload_sizes: tuple[int, ...] = (1024, 1024 * 1024)
    uploaders: tuple[int, ...] = (1, 8)  # concurrent uploaders (one connection each)
    upload_count: int = 1000  # uploads per scenario of small blobs; an eighth of it for 1 MiB
    submit_files: int = 1000  # `azuld submit` of this many 1 KiB files (0: not measured)
    # JSON and Avro (Go plugins' avro-format) side by side at count=1 and count=batch_count,
    # interleaved `encoding_rounds` times (the machine is shared: the best round of each counts).
    encodings: tuple[str, ...] = ("json", "avro")
    encoding_rounds: int = 3
    only_encodings: bool = False  # --only-encodings: the largest log and the encoding rows only
    # The plugin SDK (benchmarks/sdk.py): a backlog of `sdk_events` drained by one plugin
    # process with each number of workers; `sdk_clients` adds the raw-client reference rows.
    sdk_events: int = 2000
    sdk_workers: tuple[int, ...] = (1, 4, 16)
    sdk_clients: tuple[str, ...] = ("sdk", "raw")

    @classmethod
    def default(cls) -> Plan:
        return cls(
            sizes=[1_000, 10_000, 100_000],
            workers=[1, 16, 64],
            keys=[1, 10, 50],
            duration=6.0,
            warmup=1.0,
            latency_samples=200,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            sizes=[300, 1_000],
            workers=[1, 16],
            keys=[1, 3],
            duration=1.0,
            warmup=0.2,
            latency_samples=20,
            blobs=16,
            compare_clients=(),
            no_download_variant=False,
            upload_count=40,
            submit_files=40,
            encoding_rounds=1,
            sdk_events=60,
            sdk_clients=("sdk",),
        )
