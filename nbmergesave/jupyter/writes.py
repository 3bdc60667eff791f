"""What the Jupyter server writes for a notebook save, and how: the text the fast path or a merge made
(handed to the server instead of serialising the notebook again) and the compare-then-swap that writes it
(a temporary file renamed over the notebook only if it still holds what the save was merged with)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .. import fastpath, notebook_io
from .files import as_written, nothing, whole


class Writes:
    """The text made for each notebook's write, the bytes each write must replace, and what each write did."""

    def __init__(self, contents_manager: Any, log: logging.Logger | logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
        self.cm = contents_manager
        self.log = log
        self.serialiser = fastpath.Serialiser()
        # os path -> (text, bytes, content) made once, for the server to write instead of serialising again
        self._prepared: dict[str, tuple[str, bytes, dict[str, Any]]] = {}
        self._wrote: set[str] = set()  # os paths where the server wrote that text
        self._handed: dict[str, bytes] = {}  # os path -> the bytes of the text handed to the server to write
        self._expected: dict[str, bytes] = {}  # os path -> the bytes the next write must replace (compare-then-swap)
        # os path -> what the write did, the bytes it displaced, and what the file holds after it
        self._outcome: dict[str, tuple[str, bytes | None, bytes | None]] = {}
        self._landed: dict[str, bytes] = {}  # os path -> the bytes the save's last swap put on disk

    def hand(self, os_path: str, written: fastpath.Written) -> None:
        """Have the server write ``written`` for the next save of ``os_path`` (see :meth:`prepared`)."""
        self._prepared[os_path] = (written.text, written.data, written.notebook)

    def arm(self, os_path: str, expected: bytes) -> None:
        """The next write of ``os_path`` replaces the file only if it holds ``expected`` (:meth:`writing`)."""
        self._expected[os_path] = expected

    def forget(self, os_path: str) -> None:
        """Nothing made for ``os_path`` is handed to the server, and its next serialisation starts afresh."""
        self._prepared.pop(os_path, None)
        self.serialiser.forget(os_path)

    def outcome(self, os_path: str) -> tuple[str, bytes | None, bytes | None]:
        """What the last write of ``os_path`` did (:meth:`swap`), taken (and the arming of the next undone):
        ``written``, ``changed`` (nothing written) or ``displaced`` (with what it displaced and what the file
        holds now)."""
        self._expected.pop(os_path, None)
        return self._outcome.pop(os_path, ("written", None, None))

    def rewrite(self, os_path: str) -> None:
        """The save is written again: what the server wrote is not what it will have written."""
        self._wrote.discard(os_path)

    def finish(self, os_path: str) -> tuple[bool, bytes | None]:
        """The save of ``os_path`` is over: all made for it is let go. Whether the server wrote the text handed,
        and the bytes the save put on disk when a swap wrote them (``None``: written otherwise, or not at all).
        Those, not the file read back: another program may be writing it again already."""
        wrote = os_path in self._wrote
        landed = self._landed.pop(os_path, None)
        self._wrote.discard(os_path)
        self._prepared.pop(os_path, None)
        self._handed.pop(os_path, None)
        self._expected.pop(os_path, None)  # a save given up after its attempts leaves its last arming unused
        return wrote, landed

    def serialised(self, os_path: str, nb: dict[str, Any],
                    for_server: bool = False) -> tuple[bytes, tuple[list[bytes], list[bytes]] | None]:
        """``nb`` as Jupyter writes it, and its cut into the store's pieces when the fast path made one (so the
        store does not cut and hash it again); on the fast path serialised cell by cell, and (``for_server``)
        handed to the server to write as it is."""
        written = self.serialiser.written(os_path, nb) if fastpath.FAST else None
        if written is None:
            return as_written(nb), None
        if for_server:
            self._prepared[os_path] = (written.text, written.data, written.notebook)
        return written.data, (written.parts, written.digests)

    def prepared(self, os_path: str, nb: Any) -> str | None:
        """The text made of ``nb`` for the server to write at ``os_path`` (by the fast path or a merge),
        when ``nb`` is still that notebook (a pre-save hook or a contents manager above us may have changed it)."""
        found = self._prepared.pop(os_path, None)
        if found is None:
            return None
        text, data, content = found
        hooks = getattr(self.cm, "pre_save_hook", None) or getattr(self.cm, "_pre_save_hooks", None)
        if hooks or not fastpath.same(fastpath.plain(nb), content):
            return None
        self._wrote.add(os_path)
        self._handed[os_path] = data
        return text

    @contextmanager
    def writing(self, original: Any, os_path: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """The contents manager's ``atomic_writing`` for a notebook this extension merged: the bytes go to a
        temporary file renamed over the notebook (its mode and group kept), so no reader ever sees a partial
        file (jupyter_server writes in place, and a GET landing meanwhile restores its ``.~`` backup over a
        save that succeeded); and only if the notebook still holds what the merge was made from
        (compare-then-swap), else nothing is written and the save is merged again."""
        import io

        expected = self.armed(os_path)
        if expected is None:
            with original(os_path, *args, **kwargs) as f:
                yield f
            return
        text = kwargs.get("text", args[0] if args else True)
        buffer: Any = io.StringIO(newline="\n") if text else io.BytesIO()
        yield buffer
        data = buffer.getvalue()
        self.swap(os_path, data.encode(kwargs.get("encoding") or "utf-8") if isinstance(data, str) else data, expected)

    def write_prepared(self, original: Any, os_path: str, text: str) -> None:
        """Write the ``text`` :meth:`prepared` gave the server: with the compare-then-swap of :meth:`writing`
        when the save armed it (its bytes as made, not encoded again), else through the contents manager's
        ``atomic_writing`` (``original``), as the server would."""
        data = self._handed.pop(os_path, None)
        expected = self.armed(os_path)
        if expected is None:
            with original(os_path, encoding="utf-8") as f:
                f.write(text)
            return
        self.swap(os_path, data if data is not None else text.encode("utf-8"), expected)

    def armed(self, os_path: str) -> bytes | None:
        """The bytes the write of ``os_path`` must replace, if the save armed a compare-then-swap that can be
        done here (a folder we cannot create files in is written in place, as the server does)."""
        expected = self._expected.pop(os_path, None)
        if expected is None or not os.access(os.path.dirname(os_path) or ".", os.W_OK):
            return None
        return expected

    def swap(self, os_path: str, payload: bytes, expected: bytes) -> None:
        """Replace ``os_path`` with ``payload`` if it holds ``expected``; what happened goes to :meth:`save_again`."""
        self._landed.pop(os_path, None)
        guard = getattr(self.cm, "perm_to_403", None)
        with guard(os_path) if guard is not None else nothing():
            try:
                # marked: merged with what it replaces, so no watcher (another host's, whose store cannot
                # see this server's declarations while the database is away) merges it again
                replaced = notebook_io.write_atomic(os_path, payload, expected=expected, mark=True)
            except notebook_io.Changed:
                self._outcome[os_path] = ("changed", None, None)
                return
        unexpected = replaced.unexpected if replaced is not None else None
        was_marked = replaced is not None and replaced.marked()
        if replaced is not None:
            if unexpected is not None:  # a writer caught mid-write in place goes on writing into that inode
                unexpected, _ = whole(unexpected, replaced.read)
            replaced.close()
        if unexpected is None:
            self._outcome[os_path] = ("written", None, None)
            self._landed[os_path] = payload
            return
        self._outcome[os_path] = ("displaced", unexpected, self.put_back(os_path, unexpected, payload, mark=was_marked))

    def put_back(self, os_path: str, displaced: bytes, ours: bytes, *, mark: bool = False) -> bytes | None:
        """Our swap took off the disk a save that landed after the compare: put it back at once, so that no
        reader (another server's GET, a tab reloading) sees the file without a save that was done, and build
        on it; ours is merged into it next (:meth:`save_again`). What the file holds now (``None``: ours,
        the save could not be put back, and the merge goes on as before). ``mark``: it came with a merging
        writer's mark, and goes back with it."""
        guard = getattr(self.cm, "perm_to_403", None)
        try:
            with guard(os_path) if guard is not None else nothing():
                back = notebook_io.write_atomic(os_path, displaced, expected=ours, mark=mark)
        except Exception:  # changed again meanwhile (a third writer): merge with what is there, as before
            return None
        later = back.unexpected if back is not None else None
        if back is not None:
            back.close()
        if later is None:
            return displaced
        # a third save landed between our swap and the putting back: it goes back on disk (made from ours)
        try:
            with guard(os_path) if guard is not None else nothing():
                again = notebook_io.write_atomic(os_path, later, expected=displaced)
            if again is not None:
                again.close()
        except Exception:
            self.log.warning("nbmergesave: three saves of %s landed at once; merging with what is there", os_path)
        return None
