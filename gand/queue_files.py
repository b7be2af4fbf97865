"""The embedded broker: kombu's filesystem transport, with messages that appear whole.

kombu 5.7 writes a message by opening its final `*.msg` name and then writing into it; a
worker polling the folder can take the file in between, read nothing and die of it
("Unrecoverable error: JSONDecodeError"), leaving the job queued with no one to run it. It
happened in CI when the reaper requeued a job just as the surviving worker polled.

Here a message is written under a name no reader takes and renamed into place (atomic within
a folder), and a file that still cannot be decoded (written by something else, a disk that
filled) is moved aside with a warning instead of stopping the worker: the database, not the
message, is the truth about a job, and an idle worker that finds a queued job it can run with
no message waiting wakes itself for it (workers/worker.py, FleetThread).
"""
from __future__ import annotations

import logging
import os
import uuid
from contextlib import suppress
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads
from queue import Empty

log = logging.getLogger("gand.queue")

# Where undecodable message files go, beside the queue folder (the processed folder).
REJECTED = "rejected"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        # A reader takes only names of the form <stamp>.<queue>.msg; this one starts with a dot.
        part = os.path.join(self.data_folder_out, f".{uuid.uuid4()}.part")
        try:
            with open(part, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(part, os.path.join(self.data_folder_out, name))
        except OSError as e:
            with suppress(OSError):
                os.unlink(part)
            raise ChannelError(f"cannot add a message to {self.data_folder_out!r}: "
                               f"{e.strerror or e}") from e

    def _get(self, queue):
        wanted = f"{queue}.msg"
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.partition(".")[2] != wanted:
                continue
            # Taking a message is renaming it out of the queue folder: of two workers polling
            # at once only one rename succeeds. (kombu moves it to the system temporary folder,
            # which on another filesystem is a copy that both can make.)
            taken = os.path.join(self.processed_folder, filename)
            try:
                os.rename(os.path.join(self.data_folder_in, filename), taken)
            except OSError:
                continue  # another worker took it
            try:
                with open(taken, "rb") as f:
                    payload = f.read()
                message = loads(bytes_to_str(payload))
            except (OSError, ValueError) as e:
                self._reject(taken, filename, e)
                continue
            os.remove(taken)
            return message
        raise Empty()

    def _reject(self, taken: str, filename: str, error: Exception) -> None:
        folder = os.path.join(self.processed_folder, REJECTED)
        with suppress(OSError):
            os.makedirs(folder, exist_ok=True)
            os.replace(taken, os.path.join(folder, filename))
        log.warning("skipped a message file the broker could not read, %s (moved to %s): %s",
                    filename, folder, " ".join(str(error).split()) or type(error).__name__)


class Transport(filesystem.Transport):
    Channel = Channel

