"""A run's event files on resume: cut back to the step the run resumes from.

A run killed between a view step's summaries and the checkpoint after them
would write those steps again when it resumes; a run killed before its first
checkpoint starts over. So before a resumed (or restarted-from-nothing) run
writes, every summary its earlier processes wrote past the restored step is
dropped from their event files (each file rewritten whole, `atomic`): every
(tag, step) is then in the files once. A record torn by a kill mid-write
ends its file's readable part and is dropped with it.
"""

from __future__ import annotations

import glob
import os
from typing import Iterable, List

import tensorflow as tf
from tensorboard.compat.proto import event_pb2

from siamese_research import atomic

PATTERN = "events.out.tfevents.*"


def event_files(*folders: str) -> List[str]:
    """The event files directly in `folders`, sorted."""
    return sorted(p for folder in folders
                  for p in glob.glob(os.path.join(glob.escape(folder), PATTERN)))


def read_events(path: str) -> List[bytes]:
    """The serialised records of an event file, up to a torn one."""
    records = []
    try:
        for record in tf.data.TFRecordDataset(path):
            records.append(record.numpy())
    except tf.errors.DataLossError:
        pass  # a write cut short by a kill: what follows it is not readable
    return records




def cut_after(paths: Iterable[str], step: int) -> int:
    """Drops every summary past `step` (all of them for a negative `step`),
    and the run graph, from the files `paths`; returns how many events it
    dropped. (The process that finishes a run writes the graph whatever
    step it starts from: an earlier process's copy goes, so that it is
    written once.)"""
    dropped = 0
    for path in paths:
        records = read_events(path)
        kept = []
        for record in records:
            event = event_pb2.Event.FromString(record)
            if (event.HasField("summary") and event.step > step) or \
                    event.HasField("graph_def"):
                continue
            kept.append(record)
        if len(kept) == len(records) and os.path.getsize(path) == _size(records):
            continue
        dropped += len(records) - len(kept)
        with atomic.replacing(path) as tmp:
            try:
                with tf.io.TFRecordWriter(tmp) as writer:
                    for record in kept:
                        writer.write(record)
            except tf.errors.OpError as e:  # TensorFlow's, not an OSError
                raise OSError(e.message or type(e).__name__) from None
    return dropped


def _size(records: List[bytes]) -> int:
    # A TFRecord is a length (8 bytes), its CRC (4), the data, the data's CRC (4).
    return sum(len(r) + 16 for r in records)
