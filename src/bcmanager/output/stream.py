"""A basecaller's stream filed while it is written.

Dorado prints its reads on stdout, which the engine sends to `basecalls/basecalls.bam`.
Filed after the basecaller exits, that BAM is read back, split and compressed between
the batch's last read and its report (about 1 s per 3,500 reads on one core), and at
the end of a run every engine's last batch pays it at once, the GPUs idle. Here a
thread follows the file as it grows and files each read as it comes, so what is left
at the basecaller's exit is the stream's last block and closing the outputs.

The basecaller keeps writing to a file, never to a pipe the engine must drain: filing
that falls behind (a slow disk, a busy node) never stalls the GPU; the file is the
stream's buffer. A second thread copies what the file gains into a pipe that pysam
reads as a BAM stream (htslib blocks on the pipe, not on a file's end).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

import pysam

from bcmanager.output.origin import Pod5Origin
from bcmanager.output.split import SplitError, SplitResult, Splitter, read_group_strides
from bcmanager.records import (
    SAM_HEADER_STARTS,
    Record,
    iter_alignment_records,
    parse_tags,
)

log = logging.getLogger("bcmanager.output.stream")

CHUNK = 1 << 16
POLL_S = 0.05  # how often a quiet stream is looked at again; its end is seen at once


class StreamFiling:
    """Files the reads of `path` (BAM, SAM or FASTQ, told by its first bytes) into `dest`
    as the basecaller writes them: `start`, then `basecaller_exited` once its process
    has ended, then `finish` (the outputs in place) or `abandon` (nothing left).

    `origins` is called in the filing thread (it reads the job's pod5 footers while the
    basecaller loads its model)."""

    def __init__(
        self,
        path: Path,
        dest: Path,
        origins: Callable[[], Mapping[str, Pod5Origin]],
        *,
        job_id: int,
        min_qscore: float,
        barcoding: bool,
        poll_s: float = POLL_S,
    ) -> None:
        self.path = path
        self.dest = dest
        self.origins = origins
        self.job_id = job_id
        self.min_qscore = min_qscore
        self.barcoding = barcoding
        self.poll_s = poll_s
        self.reads = 0  # filed so far
        self._parents: set[str] = set()  # the pod5 reads they came from (split reads: one)
        # (how many of them, when the last was filed: monotonic), set as one for readers
        # in other threads (the heartbeat's)
        self.filed: tuple[int, float | None] = (0, None)
        self.reads_in: int | None = None  # the reads of the job's pod5 files, once read
        self.reads_at_exit: int | None = None  # filed when the basecaller exited
        self._exited = threading.Event()
        self._stop = threading.Event()
        self._head = b""  # the stream's first bytes: its format
        self._head_known = threading.Event()
        self._splitter: Splitter | None = None
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._ended = False

    def start(self) -> StreamFiling:
        read_fd, write_fd = os.pipe()
        self._threads = [
            threading.Thread(target=self._follow, args=(write_fd,), name=f"follow-{self.job_id}"),
            threading.Thread(target=self._file, args=(read_fd,), name=f"file-{self.job_id}"),
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        return self

    def basecaller_exited(self) -> None:
        """The stream is complete once what the file holds now has been read."""
        self.reads_at_exit = self.reads
        self._exited.set()

    def finish(self) -> SplitResult:
        """Wait for the last read, then close the outputs, write the summaries and rename
        everything into place. Raises what stopped the filing (SplitError for a read of
        no pod5 of the job, OSError, a bad stream); nothing is left under a final name."""
        if self._ended:
            raise SplitError("this stream was already filed or abandoned")
        self._exited.set()
        self._join()
        self._ended = True
        splitter, self._splitter = self._splitter, None
        if self._error is not None or splitter is None:
            if splitter is not None:
                splitter.discard()
            raise self._error or SplitError(f"{self.path}: no reads could be filed")
        return splitter.finish()

    def abandon(self) -> None:
        """Stop following and remove what was written (the batch failed or was lost)."""
        if self._ended:
            return
        self._ended = True
        self._stop.set()
        self._exited.set()
        self._join()
        if self._splitter is not None:
            self._splitter.discard()
            self._splitter = None

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _follow(self, write_fd: int) -> None:
        """Copy what the file gains into the pipe until the basecaller has exited and its
        last bytes are copied (or the filing stopped reading, or `abandon`)."""
        try:
            with (
                open(write_fd, "wb", buffering=0) as sink,
                open(self.path, "rb", buffering=0) as source,
            ):
                while not self._stop.is_set():
                    exited = self._exited.is_set()  # before reading: no write after it is missed
                    chunk = source.read(CHUNK)
                    if chunk:
                        if not self._head_known.is_set():
                            self._head = chunk[:4]
                            self._head_known.set()
                        _write_all(sink, chunk)
                    elif exited:
                        return
                    else:
                        self._exited.wait(self.poll_s)
        except BrokenPipeError:  # the filing stopped on an error of its own
            pass
        except OSError as exc:  # e.g. the file cannot be opened: the filing sees the pipe end
            self._error = self._error or exc
        finally:
            self._head_known.set()  # an empty stream: the filing finds no format

    def _file(self, read_fd: int) -> None:
        with open(read_fd, "rb") as stream:
            try:
                origins = self.origins()
                self.reads_in = sum(o.reads for o in origins.values())
                self._head_known.wait()
                if not self._head:
                    raise SplitError(f"{self.path}: the basecaller wrote nothing")
                if self._head.startswith(b"@") and self._head not in SAM_HEADER_STARTS:
                    self._file_fastq(stream, origins)
                else:  # BAM (gzip) or SAM
                    self._file_alignments(stream, origins)
            except BaseException as exc:  # finish() raises it in the engine's delivery
                if not self._stop.is_set():
                    log.warning(
                        "job %d: filing the basecaller's stream stopped: %s", self.job_id, exc
                    )
                self._error = self._error or exc

    def _splitter_for(self, origins: Mapping[str, Pod5Origin], header: Mapping) -> Splitter:
        self._splitter = Splitter(
            self.dest,
            origins,
            header,
            job_id=self.job_id,
            min_qscore=self.min_qscore,
            barcoding=self.barcoding,
            hold_back=False,
        )
        return self._splitter

    def _file_alignments(self, stream: IO[bytes], origins: Mapping[str, Pod5Origin]) -> None:
        with pysam.AlignmentFile(stream, "r", check_sq=False) as handle:
            header = handle.header.to_dict()
            splitter = self._splitter_for(origins, header)
            strides = read_group_strides(header)
            for record in iter_alignment_records(handle, primary_only=False):
                splitter.add("bam", record, strides)
                self._count(record)

    def _file_fastq(self, stream: IO[bytes], origins: Mapping[str, Pod5Origin]) -> None:
        splitter = self._splitter_for(origins, {})
        for record in iter_fastq_stream(stream):
            splitter.add("fastq", record, {})
            self._count(record)

    def _count(self, record: Record) -> None:
        if record.is_primary:
            self.reads += 1
            self._parents.add(record.parent_read_id)
            if len(self._parents) != self.filed[0]:
                self.filed = (len(self._parents), time.monotonic())

    @property
    def pod5_reads_filed(self) -> int:
        """How many of the job's pod5 reads are filed so far: a read split in two (two
        records, `pi` naming it) counts once, as in `reads_in`."""
        return self.filed[0]


def _write_all(sink: IO[bytes], chunk: bytes) -> None:
    """Every byte into the pipe at once (unbuffered: the filing sees a read as it comes)."""
    view = memoryview(chunk)
    while view:
        written = sink.write(view)
        view = view[written or 0 :]


def iter_fastq_stream(stream: IO[bytes]) -> Iterator[Record]:
    """Records of a FASTQ stream of four-line records (as Dorado prints them), with the
    tags of their headers. SplitError on a record that is not one."""
    lines = iter(stream)
    for header in lines:
        sequence, plus, quality = (next(lines, b"") for _ in range(3))
        bases, scores = sequence.rstrip(b"\r\n"), quality.rstrip(b"\r\n")
        if not header.startswith(b"@") or not plus.startswith(b"+") or len(bases) != len(scores):
            raise SplitError(f"not a FASTQ record: {header[:80]!r}")
        name, *comment = header[1:].decode("utf-8").split(None, 1) or [""]  # as FastxFile
        yield Record(
            read_id=name,
            sequence=bases.decode("ascii"),
            quality=scores.decode("ascii"),
            tags=parse_tags(comment[0].rstrip("\r\n") if comment else ""),
        )
