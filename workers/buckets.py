"""Object stores for checkpoints: S3 (and S3-compatible stores) and GCS, through Optuna's artifact
stores (``Boto3ArtifactStore``, ``GCSArtifactStore``), the ones optuna-dashboard reads.

A location is a URL: ``s3://bucket/prefix`` or ``gs://bucket/prefix``. An S3-compatible store
(MinIO, Ceph, a test server) is named by ``?endpoint_url=http://host:9000``; ``?region=`` picks
an AWS region. The URL holds no credentials: each process that opens it (the driver, every
worker) authenticates the way the cloud's own library does on that machine (environment
variables, the credentials files, an instance or workload identity).

Optuna's artifact stores read, write and remove an object by key; listing a prefix (what finding
a trial's newest checkpoint and removing a study's needs) uses the same client's public API.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

SCHEMES = {"s3": "boto3 (pip install 'hpo[s3]')", "gs": "google-cloud-storage (pip install 'hpo[gcs]')"}
_OPTIONS = {"endpoint_url", "region"}


def is_object_url(location: str) -> bool:
    return "://" in location and urlsplit(location).scheme in SCHEMES


def check_url(url: str) -> None:
    """Raise ValueError naming what is wrong with an object-store URL (nothing is contacted)."""
    parts = urlsplit(url)
    if "@" in parts.netloc:  # never repeated: it may hold a secret
        raise ValueError(f"a {parts.scheme}:// URL holds credentials: they never go in the URL (the cloud's "
                         "own environment variables or credentials files provide them)")
    if parts.scheme not in SCHEMES:
        raise ValueError(f"{url!r}: only {', '.join(s + '://' for s in SCHEMES)} URLs name an object store")
    if not parts.netloc:
        raise ValueError(f"{url!r} names no bucket (s3://BUCKET/PREFIX)")
    unknown = sorted({k for k, _ in parse_qsl(parts.query)} - _OPTIONS)
    if unknown:
        raise ValueError(f"{url!r}: unknown option {unknown[0]!r} (known: {', '.join(sorted(_OPTIONS))})")
    try:
        _client_module(parts.scheme)
    except ImportError:
        raise ValueError(f"{parts.scheme}:// checkpoints need {SCHEMES[parts.scheme]}") from None


def _client_module(scheme: str) -> Any:
    if scheme == "s3":
        import boto3  # type: ignore[import-untyped,unused-ignore]

        return boto3
    from google.cloud import storage  # type: ignore[import-untyped,import-not-found,unused-ignore]

    return storage


class Bucket:
    """A prefix of a bucket: keys below it are read, written, listed and removed."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.scheme, self.name, self._query = parts.scheme, parts.netloc, parts.query
        self.prefix = parts.path.strip("/")
        self._store, self._list = _open(self.scheme, self.name, self._query)

    @property
    def url(self) -> str:
        query = f"?{self._query}" if self._query else ""
        return f"{self.scheme}://{self.name}/{self.prefix}{query}"

    def child(self, name: str) -> Bucket:
        parts = urlsplit(self.url)
        return Bucket(parts._replace(path=f"{self.prefix}/{name}".strip("/")).geturl())

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def keys(self, under: str = "") -> list[str]:
        """Every key below ``under`` (relative to this prefix), sorted."""
        start = self._key(under) if under else (f"{self.prefix}/" if self.prefix else "")
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[cut:] for k in self._list(start))

    def read(self, name: str) -> bytes | None:
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            with self._store.open_reader(self._key(name)) as body:
                data: bytes = body.read()
                return data
        except ArtifactNotFound:
            return None

    def write(self, name: str, data: bytes | BinaryIO) -> None:
        self._store.write(self._key(name), io.BytesIO(data) if isinstance(data, bytes) else data)

    def remove(self, name: str) -> None:
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            self._store.remove(self._key(name))
        except ArtifactNotFound:
            pass

    # Optuna's ArtifactStore protocol, so optuna-dashboard can serve artifacts under this prefix
    def open_reader(self, artifact_id: str) -> BinaryIO:
        from optuna.artifacts.exceptions import ArtifactNotFound

        data = self.read(artifact_id)
        if data is None:
            raise ArtifactNotFound(f"no artifact {artifact_id!r} under {self.scheme}://{self.name}/{self.prefix}")
        return io.BytesIO(data)

    def remove_under(self, under: str = "") -> int:
        keys = self.keys(under)
        for key in keys:
            self.remove(key)
        return len(keys)


@functools.lru_cache(maxsize=16)
def _open(scheme: str, bucket: str, query: str) -> tuple[Any, Callable[[str], list[str]]]:
    """Optuna's artifact store for a bucket and a lister of its keys (one client per process)."""
    options = dict(parse_qsl(query))
    if scheme == "s3":
        from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]
        from optuna.artifacts import Boto3ArtifactStore

        client = _client_module("s3").client(
            "s3", endpoint_url=options.get("endpoint_url"), region_name=options.get("region"),
            config=Config(connect_timeout=10, retries={"max_attempts": 3}),  # an unreachable store fails soon
        )

        def s3_keys(prefix: str) -> list[str]:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [item["Key"] for page in pages for item in page.get("Contents", [])]

        return Boto3ArtifactStore(bucket, client=client), s3_keys
    import warnings

    from optuna.artifacts import GCSArtifactStore
    from optuna.exceptions import ExperimentalWarning

    gcs = _client_module("gs").Client()

    def gcs_keys(prefix: str) -> list[str]:
        return [blob.name for blob in gcs.list_blobs(bucket, prefix=prefix)]

    with warnings.catch_warnings():  # experimental in Optuna; its interface is the one CI tests
        warnings.simplefilter("ignore", ExperimentalWarning)
        return GCSArtifactStore(bucket, client=gcs), gcs_keys

