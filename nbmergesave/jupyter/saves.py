"""The save hook of the Jupyter server: each load's hash kept, and each save merged with what changed on
disk since its base (:mod:`nbmergesave.jupyter` describes the whole)."""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from .. import fastpath, notebook_io
from ..merge import merge
from ..report import describe
from ..store import Store, sha256
from .bases import base_of
from .files import as_written, mergeable, pair_hash, plain, read, whole, with_paired_text
from .replies import BASE_KEY, REPLY_KEY, changes, conflict_cells
from .stores import Stores
from .writes import Writes

#: Set while this request is saving a notebook: the server's own ``get(content=False)`` at the end of a save
#: need not ask whether the file parses (a parse of the whole file; the save's reply says what happened).
SAVING: contextvars.ContextVar[bool] = contextvars.ContextVar("nbmergesave_saving", default=False)


class SaveMerger:
    """Hashes of what this server served, and the merge done before each notebook save."""

    #: How many served hashes of a path are remembered (one per client is enough).
    REMEMBERED = 16
    #: How many times a save is merged again when the file changed between the merge and the write.
    ATTEMPTS = 8

    def __init__(self, contents_manager: Any, log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
                 engine: str = "cells") -> None:
        self.cm = contents_manager
        self.log = log
        self.engine = engine  # c.NbMergeSave.engine
        self.served: dict[str, list[str]] = {}  # path -> sha256s, oldest first
        self.stores = Stores(log, self.os_path)  # the store, or the spool standing in for it; the save lock
        self.writes = Writes(contents_manager, log)  # what the server writes, with compare-then-swap
        #: The watcher of the server's folder (:mod:`.watch`), when it runs.
        self.watcher: Any = None

    def remember(self, path: str, sha: str) -> None:
        shas = [s for s in self.served.get(path, []) if s != sha]
        self.served[path] = (shas + [sha])[-self.REMEMBERED:]

    def os_path(self, path: str) -> str:
        return str(self.cm._get_os_path(path))

    # --- loads -------------------------------------------------------------

    def loaded(self, path: str, model: dict[str, Any]) -> None:
        """Keep the served notebook in the store and tell the client its hash."""
        if model.get("type") != "notebook":
            return
        try:
            os_path = self.os_path(path)
            if model.get("content") is None:
                if not SAVING.get():
                    model[REPLY_KEY] = {"mergeable": mergeable(os_path)}
                return
            data = read(os_path)
            sha = sha256(data) if data is not None else None
            served = model.get("hash")
            if data is not None and served != sha and pair_hash(served, sha):  # type: ignore[arg-type]
                if notebook_io.parse_notebook(data) != plain(model["content"]):
                    return  # (Jupytext served a paired text file's inputs that the .ipynb does not hold yet)
            elif data is None or served not in (None, sha) or (
                    served is None and notebook_io.parse_notebook(data) != plain(model["content"])):
                # The file changed between the server's read and ours (another server's save): keep what
                # was served, as the bytes Jupyter writes for it. A base is needed as a notebook, and this
                # is the notebook the client holds (left out, a later save would be merged against an
                # older version it did not start from, and report conflicts that are none).
                data = as_written(model["content"])
                sha = sha256(data)
            assert data is not None and sha is not None
            self.stores.keep(path, data, sha)
            self.remember(path, sha)
            model[REPLY_KEY] = {"sha256": sha, "mergeable": True}
            with self.stores.using(path, os_path, catch_up=False) as store:  # on the event loop: no catch-up here
                if store.latest_with(os_path, sha) is None:
                    store.add(os_path, data, "observed", on_disk=False)
                current = store.on_disk(os_path)
            if self.watcher is not None and (current is None or current.sha256 != sha):
                # Not watched before (or changed while nothing watched): the folder's watcher records
                # the file now, before anyone saves it, so an outside write that follows is merged
                # with what the tab loaded and saves, not taken for a first sighting.
                self.watcher.look_at(os_path)
        except Exception:  # an odd model or file is the server's business, not ours
            self.log.debug("nbmergesave: could not record the load of %s", path, exc_info=True)

    # --- saves -------------------------------------------------------------

    def before_save(self, model: dict[str, Any], path: str) -> dict[str, Any] | None:
        """Merge the save with what changed on disk; return what was done (``None``: not a notebook save).
        Either way the write that follows is armed as a compare-then-swap (:meth:`writing`)."""
        sent_base = model.pop(BASE_KEY, None)
        if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
            return None
        os_path = self.os_path(path)
        sent = sent_base if isinstance(sent_base, str) else None
        disk = read(os_path)  # read and hashed once for both paths
        disk_sha = sha256(disk) if disk is not None else None
        try:
            done = self.stores.run(path, os_path, lambda store: self._fast_save(store, model, path, os_path, sent,
                                                                                  disk, disk_sha))
        except Exception:
            self.log.warning("nbmergesave: the fast path failed for %s; taking the full one", path, exc_info=True)
            self.writes.forget(os_path)
            done = None
        if done is not None:
            self.writes.arm(os_path, done["_disk"])
            return done
        incoming, cut = self.writes.serialised(os_path, model["content"])
        return self._prepare(model, path, incoming, sent, cut=cut, disk=disk, disk_sha=disk_sha)

    def _prepare(self, model: dict[str, Any], path: str, incoming: bytes, sent: str | None, *,
                 base: bytes | None = None, disk: bytes | None = None, expected: bytes | None = None,
                 cut: tuple[list[bytes], list[bytes]] | None = None,
                 disk_sha: str | None = None) -> dict[str, Any] | None:
        """Merge ``incoming`` into the model to write, and arm the compare-then-swap of that write.

        ``base``: the base found by an earlier attempt of this save; ``disk``: the file as read (with its
        ``disk_sha``), else read now; with ``expected``: a save our write displaced (it landed between the
        compare and the swap), to merge with what we wrote. ``cut``: ``incoming``'s pieces, when made.
        """
        os_path = self.os_path(path)
        try:
            done = self.stores.run(path, os_path, lambda store: self._merge_into(
                store, model, path, os_path, incoming, sent, base=base, disk=disk, cut=cut, disk_sha=disk_sha))
        except Exception as e:  # the notebook's own trouble (a merge that cannot be done): the save goes as sent
            self.log.error("nbmergesave: could not merge the save of %s (%s); saving it as sent", path, e, exc_info=True)
            self.writes.forget(os_path)
            try:  # ... and is kept, as every version that reaches the disk is
                self.stores.run(path, os_path, lambda store: store.latest_with(os_path, sha256(incoming))
                                 or store.add(os_path, incoming, "observed", on_disk=False, cut=cut))
            except Exception:
                self.log.error("nbmergesave: could not store the save of %s either", path, exc_info=True)
                return None
            # the client is still told the hash of what it saved, its base for the next save (without it, that
            # save would be placed against the version before this one, and show its own edit as a conflict)
            return {"merged": False, "declared": incoming, "incoming": incoming, "sent": sent}
        done.update(incoming=incoming, sent=sent)
        self.writes.arm(os_path, done["_disk"] if expected is None else expected)
        return done

    def save_again(self, model: dict[str, Any], path: str, done: dict[str, Any] | None) -> dict[str, Any] | None:
        """After the write: ``None`` when it is done, else what to write next (merged again). The write
        finds the file changed since it was read (another server's save, an outside write): the save is
        merged with that and written again; or its swap took off the disk a save that landed meanwhile:
        that one is merged in."""
        if done is None:
            return None
        os_path = self.os_path(path)
        what, displaced, holds = self.writes.outcome(os_path)
        again = None
        if what == "changed":
            import nbformat

            self.log.info("nbmergesave: %s changed while its save was merged; merging again", path)
            model["content"] = nbformat.from_dict(notebook_io.parse_notebook(done["incoming"]))
            base = done["_base"]
            if base is None:  # there was no file when the save came, and one is there now: both sides are new
                base = notebook_io.dumps(notebook_io.empty_notebook()).encode()
            self.writes.rewrite(os_path)
            again = self._prepare(model, path, done["incoming"], done["sent"], base=base)
        elif what == "displaced" and displaced is not None and displaced != done["declared"]:
            self.log.info("nbmergesave: a save of %s landed during ours; merging it in", path)
            ours = done["declared"]
            import nbformat

            model["content"] = nbformat.from_dict(notebook_io.parse_notebook(ours))
            base = done["_disk"] or notebook_io.dumps(notebook_io.empty_notebook()).encode()
            self.writes.rewrite(os_path)
            again = self._prepare(model, path, ours, None, base=base, disk=displaced,
                                  expected=holds if holds is not None else ours)
            if again is not None:
                # the person's save, as they sent it, with its own hash: what this server then takes for the
                # version that client holds (not 'ours', the save merged in here: a later save of that client,
                # placed against 'ours', would take edits it made as the other side's, and conflict)
                again.update(incoming=done["incoming"], incoming_sha=_incoming_sha(done))
        else:
            done["_final"] = True  # what was meant is what the write put on disk
        return again

    def _fast_save(self, store: Store, model: dict[str, Any], path: str, os_path: str, sent: str | None,
                   disk: bytes | None, disk_sha: str | None) -> dict[str, Any] | None:
        """A save made from the very version on disk (the front end's hash is the file's): nothing to merge or
        search for. Record it with its declaration in one commit, serialised cell by cell (only the changed
        cells cost anything), and hand the server these bytes to write (:func:`install`), so the notebook is
        serialised once. ``None``: not such a save (or the fast path is off); the full path decides."""
        if not fastpath.FAST or not sent or disk_sha != sent:
            return None
        from ..pairs import pair_of

        if pair_of(os_path, disk) is not None:
            return None  # a Jupytext pair: its text file may hold an edit to merge with (the full path)
        if store.latest_with(os_path, sent) is None:
            return None
        written = self.writes.serialiser.written(os_path, model["content"])
        if written is None:
            return None
        saved = store.add(os_path, written.data, "observed", on_disk=False, cut=(written.parts, written.digests),
                          declare=(sent, "jupyter"))
        self.writes.hand(os_path, written)
        done: dict[str, Any] = {"merged": False, "declared": written.data, "fast": saved.sha256,
                                "incoming": written.data, "sent": sent, "_base": disk, "_disk": disk}
        if store.is_spool:
            done["spooled"] = True
        return done

    def _merge_into(self, store: Store, model: dict[str, Any], path: str, os_path: str, incoming: bytes,
                    sent: str | None, *, base: bytes | None = None, disk: bytes | None = None,
                    cut: tuple[list[bytes], list[bytes]] | None = None, disk_sha: str | None = None) -> dict[str, Any]:
        """The full path: find the save's base, merge it with the file on disk when that changed since.

        Each notebook is hashed once (1.8 MB: about 2 ms each); the save, the merge and its declaration are
        recorded in one transaction (one commit), after the merge; the notebooks we serialised go into the
        store with their cut (pieces of unchanged cells are not cut and hashed again). ``base``: found by an
        earlier attempt of this save (then not searched for again)."""
        import nbformat

        if disk is None:
            disk = read(os_path)
            disk_sha = None
        if disk is not None and disk_sha is None:
            disk_sha = sha256(disk)
        disk_nb = None
        known = store.latest_with(os_path, disk_sha or "") if disk is not None else None
        if disk is not None and (known is None or known.kind == "torn"):
            found, disk_nb = whole(disk, lambda: read(os_path))  # (an agent may be writing it in place now)
            if found is not disk:  # read again: the write under way, finished
                disk, disk_sha = found, sha256(found)
                known = store.latest_with(os_path, disk_sha)
            if known is None:  # a file that stays broken is kept too
                store.add(os_path, disk, "observed" if disk_nb is not None else "torn", on_disk=False)
        on_file = disk  # what the compare-then-swap expects to replace (a pair's text edits are not in the file)
        incoming_nb = notebook_io.parse_notebook(incoming, "the save")
        paired = with_paired_text(store, os_path, disk, self.engine)
        if paired is not disk:  # a Jupytext pair's text edits taken in: another notebook, hashed again
            disk, disk_sha, disk_nb = paired, sha256(paired) if paired is not None else None, None
        if base is None:
            base, how = base_of(store, path, os_path, sent, self.served.get(path, []), incoming_nb, disk, self.log)
            if not (sent and how == "sent by the client"):
                self.log.info("nbmergesave: the save of %s came without a known base; base: %s", path, how)
            if store.is_spool:
                self.log.debug("nbmergesave: %s merged from the local spool (base: %s)", path, how)
            base_sha = sent if sent and how == "sent by the client" else sha256(base) if base is not None else None
        else:
            base_sha = sha256(base)
            if store.latest_with(os_path, base_sha) is None:
                store.add(os_path, base, "observed", on_disk=False)
        reply: dict[str, Any] = {"merged": False, "_base": base, "_disk": on_file if on_file is not None else b""}
        if store.is_spool:
            reply["spooled"] = True
        if base is None or disk is None or disk in (base, incoming):
            declared = base_sha if base is not None else disk_sha if disk else sha256(incoming)
            store.add(os_path, incoming, "observed", on_disk=False, cut=cut, declare=(declared or "", "jupyter"))
            return {**reply, "declared": incoming}
        if disk_nb is None:
            disk_nb = notebook_io.parse_notebook(disk, f"'{path}' on disk")
        base_nb = notebook_io.parse_notebook(base, "the loaded version")
        if disk_nb == base_nb:  # same notebook, other bytes
            store.add(os_path, incoming, "observed", on_disk=False, cut=cut, declare=(disk_sha or "", "jupyter"))
            return {**reply, "declared": incoming}
        result = merge(base_nb, disk_nb, incoming_nb, engine=self.engine)
        notebook_io.validate(result.notebook, f"merged '{path}'")
        text, text_cut = self.writes.serialised(os_path, result.notebook, for_server=True)
        unresolved = list(result.unresolved)
        base_v, disk_v = store.latest_with(os_path, base_sha or ""), store.latest_with(os_path, disk_sha or "")
        with store.batch():  # the save, the merge and its declaration: one commit
            saved = store.add(os_path, incoming, "observed", on_disk=False, cut=cut)
            merged_v = store.add(os_path, text, "merged", on_disk=False, base=base_v.version if base_v else None,
                                 local=disk_v.version if disk_v else None, remote=saved.version,
                                 conflicts=len(unresolved), engine=self.engine, cut=text_cut,
                                 declare=(disk_sha or "", "jupyter"))
        model["content"] = nbformat.from_dict(result.notebook)
        if unresolved:
            self.log.warning("nbmergesave: %s changed on disk since it was loaded; merged with %d conflict(s) marked "
                             "inline: %s", path, len(unresolved), "; ".join(describe(c) for c in unresolved))
        else:
            self.log.info("nbmergesave: %s changed on disk since it was loaded; merged cleanly", path)
        return {
            **reply,
            "merged": True, "declared": text, "version": merged_v.version, "engine": self.engine, "fast": merged_v.sha256,
            "local": disk_sha, "remote": saved.sha256, "base": base_sha,
            "changes": changes(base_nb, disk_nb),
            "conflicts": conflict_cells(result.notebook, unresolved),
            "content": result.notebook,
        }

    def after_save(self, path: str, done: dict[str, Any] | None, saved: dict[str, Any]) -> None:
        """Declare the bytes the server wrote, should they differ from what was declared
        (another serialiser): a watcher must recognise this save as ours, not merge it again.
        Then tell the client what happened, and the hash of what is now on disk."""
        os_path = self.os_path(path)
        wrote, landed = self.writes.finish(os_path)
        if done is None:
            return
        meant: bytes = done.pop("declared")
        fast = done.pop("fast", None)
        final = done.pop("_final", False)
        incoming = done.pop("incoming", None)
        sent_sha = done.pop("incoming_sha", None)
        for internal in ("_base", "_disk", "sent"):
            done.pop(internal, None)
        if incoming is not None:
            # What a client without the front end now holds. Remembered (and kept for a spool) only now:
            # while the save is merged, the save itself must never be taken for its own base.
            incoming_sha = _incoming_sha({**done, "incoming": incoming, "incoming_sha": sent_sha,
                                          "declared": meant, "fast": fast})
            self.remember(path, incoming_sha)
            self.stores.keep(path, incoming, incoming_sha)
        try:
            if fast is not None and wrote and final:
                # the server wrote the text we made (install's _save_notebook), swapped in as it was meant:
                # it is what was declared, and no need to read it back
                self.stores.keep(path, meant, fast)
                self._on_disk(path, os_path, fast)
                if isinstance(saved, dict):
                    saved[REPLY_KEY] = {**done, "sha256": fast}
                return
            written = landed if landed is not None else read(os_path)
            if written is None:
                return
            sha = fast if fast is not None and written == meant else sha256(written)  # (fast: meant's sha256)
            self.stores.keep(path, written, sha)
            if written == meant:
                self._on_disk(path, os_path, sha)
            else:
                self.writes.serialiser.forget(os_path)

                def declare(store: Store) -> None:
                    declared = store.declared_base(os_path, sha256(meant))
                    if declared is not None and declared.sha256:
                        store.declare(os_path, sha, declared.sha256, "jupyter")

                self.stores.run(path, os_path, declare, catch_up=False)
            if isinstance(saved, dict):
                saved[REPLY_KEY] = {**done, "sha256": sha}
        except Exception:
            self.log.error("nbmergesave: could not record the save of %s", path, exc_info=True)

    def _on_disk(self, path: str, os_path: str, sha: str) -> None:
        """Mark the version this save wrote as the file's, still under the save lock: a write that replaces it
        before any watcher reads it (an agent writing just after a person's Ctrl+S) is then judged against this
        save, not the version before it, which would undo the save. A commit that does not wait for the disk:
        lost in a crash, the next look at the file marks it again."""
        def mark(store: Store) -> None:
            version = store.latest_with(os_path, sha)
            if version is not None:
                with store.lax():
                    store.add_on_disk(os_path, version.version)

        self.stores.run(path, os_path, mark, catch_up=False)  # (the save lock is held: no catch-up here)


def _incoming_sha(done: dict[str, Any]) -> str:
    """The sha256 of the save a client sent (``done["incoming"]``), from what the save's steps hashed already."""
    incoming = done["incoming"]
    if done.get("incoming_sha"):  # carried over from an earlier attempt of the save
        return done["incoming_sha"]  # type: ignore[no-any-return]
    if incoming is done.get("declared") and done.get("fast") is not None:
        return done["fast"]  # type: ignore[no-any-return]
    return done.get("remote") or sha256(incoming)
