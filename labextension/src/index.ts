/**
 * nbmergesave's JupyterLab front end.
 *
 * - ``nbmergesave:merge-save``: sends the hash of the version a tab holds with
 *   each save (the server merges against exactly that version), keeps
 *   JupyterLab's "File Changed" dialog away from saves the server will merge,
 *   and shows the merged notebook in place, with a notification.
 * - ``nbmergesave:conflicts``: a bar on each conflicted cell with the buttons
 *   Keep mine, Keep theirs and Keep both.
 * - ``nbmergesave:other-tabs``: a tab that is not dirty follows saves made
 *   elsewhere (another tab, person or server) in place.
 * - ``nbmergesave:store-away`` (``away.ts``): a notice while the history store
 *   is away.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Contents, ServerConnection } from '@jupyterlab/services';
import { PanelLayout, Widget } from '@lumino/widgets';

import {
  Choice,
  ICellJSON,
  IConflict,
  IMergeReply,
  OPENING_METADATA,
  Side,
  cellsFingerprint,
  coalesceStreams,
  conflictLabel,
  describeFollow,
  describeMerge,
  describePending,
  findConflicts,
  keepsEdited,
  keepNewCells,
  planUpdate,
  settleCell,
  settleInsert,
  settleMetadata,
  text,
  Writer
} from './logic';
import { storeAway } from './away';

/** What the front end knows of each open notebook, by path. */
class State {
  /** sha256 of the version each path's tabs hold (what a save was made from). */
  held = new Map<string, string>();
  /** Paths with a save on its way. */
  saving = new Set<string>();
  /** The cells each path's tabs held when loaded or saved (see cellsFingerprint). */
  cells = new Map<string, string>();
  /** The notification naming a notebook's conflicts, to dismiss once they are settled. */
  conflictNote = new Map<string, string>();
  /** Which side of nbdime's markers is this tab's, after a merge. */
  mine = new Map<string, Side>();
  /** The contents manager's own ``get``, which leaves ``held`` alone. */
  rawGet: Contents.IManager['get'] | null = null;
  tracker: INotebookTracker | null = null;
  /** Called after the cells of a notebook were replaced (the conflict bars redraw). */
  refreshed = new Set<(panel: NotebookPanel) => void>();
}

const state = new State();

function panelsFor(path: string): NotebookPanel[] {
  const found: NotebookPanel[] = [];
  state.tracker?.forEach(panel => {
    if (panel.context.path === path) {
      found.push(panel);
    }
  });
  return found;
}

function basename(path: string): string {
  return path.split('/').pop() || path;
}

export function reviewUrl(path: string, version?: number): string {
  const query: Record<string, string> = { path };
  if (version !== undefined) {
    query.version = String(version);
  }
  return URLExt.join(PageConfig.getBaseUrl(), 'nbmergesave', 'review') + URLExt.objectToQueryString(query);
}

/** Replace the cells a notebook shows with ``cells``, touching only those that differ. */
/**
 * Show ``content`` in the tabs of ``path``, touching only the cells that differ. ``sent``: the
 * cells this tab saved; a field the merge left as sent is not touched, so typing done and
 * output streamed since the save went out stay.
 */
function showInPlace(path: string, content: { cells: ICellJSON[]; metadata?: Record<string, any> }, sent?: ICellJSON[]): void {
  const panel = panelsFor(path)[0];
  if (!panel || !panel.model) {
    return;
  }
  const model = panel.model;
  const shared = model.sharedModel;
  const notebook = panel.content;
  const activeId = notebook.activeCell?.model.id;
  const scrolled = [notebook.node, notebook.outerNode].map(node => node?.scrollTop ?? 0);
  const current = shared.cells.map(cell => cell.toJSON() as unknown as ICellJSON);
  const sentById = new Map((sent ?? []).map(cell => [cell.id, cell] as [string | undefined, ICellJSON]));
  const target = sent ? keepNewCells(current, sent, content.cells) : content.cells;
  const ops = planUpdate(current, target);
  shared.transact(() => {
    const metadata = content.metadata;
    if (metadata && JSON.stringify(shared.getMetadata()) !== JSON.stringify(metadata)) {
      for (const key of Object.keys(shared.getMetadata())) {
        if (!(key in metadata) && !OPENING_METADATA.includes(key)) {
          shared.deleteMetadata(key);
        }
      }
      shared.setMetadata(metadata as any);
    }
    if (ops === null) {
      shared.deleteCellRange(0, shared.cells.length);
      shared.insertCells(0, content.cells as any);
      return;
    }
    for (const op of ops) {
      if (op.op === 'delete') {
        shared.deleteCellRange(op.index, op.index + op.count);
      } else if (op.op === 'insert') {
        shared.insertCell(op.index, (op.cell.outputs ? { ...op.cell, outputs: coalesceStreams(op.cell.outputs) } : op.cell) as any);
      } else {
        const cell = shared.getCell(op.index) as any;
        const before = sentById.get(op.cell.id);
        const merged = (field: string, norm: (v: any) => any = v => v) =>
          !before || JSON.stringify(norm(before[field])) !== JSON.stringify(norm(op.cell[field]));
        const source = text(op.cell.source);
        if (merged('source', text) && cell.getSource() !== source) {
          cell.setSource(source);
        }
        if (cell.cell_type === 'code' && merged('outputs', v => v ?? [])) {
          const outputs = coalesceStreams(op.cell.outputs ?? []);
          if (JSON.stringify(cell.getOutputs()) !== JSON.stringify(outputs)) {
            cell.setOutputs(outputs);
          }
          if (cell.execution_count !== (op.cell.execution_count ?? null)) {
            cell.execution_count = op.cell.execution_count ?? null;
          }
        }
        const metadata = { ...(op.cell.metadata ?? {}) };
        if (merged('metadata', withoutTrust) && JSON.stringify(withoutTrust(cell.getMetadata())) !== JSON.stringify(metadata)) {
          for (const key of Object.keys(cell.getMetadata())) {
            if (!(key in metadata)) {
              cell.deleteMetadata(key);
            }
          }
          cell.setMetadata(metadata);
        }
      }
    }
  });
  model.dirty = false;
  if (sent && cellsFingerprint(cellsOf(panel), shared.getMetadata()) !== cellsFingerprint(content.cells, content.metadata)) {
    // typing or cells added while the save was on its way are not saved yet: the tab stays dirty
    // (JupyterLab marks it clean when the save completes, so mark it again then)
    const again = (_: unknown, saveState: string) => {
      if (saveState === 'completed' || saveState === 'failed') {
        panel.context.saveState.disconnect(again);
        model.dirty = true;
      }
    };
    panel.context.saveState.connect(again);
  }
  if (activeId) {
    const index = shared.cells.findIndex(cell => cell.id === activeId);
    if (index >= 0 && notebook.activeCellIndex !== index) {
      notebook.activeCellIndex = index;
    }
  }
  [notebook.node, notebook.outerNode].forEach((node, i) => {
    if (node) {
      node.scrollTop = scrolled[i];
    }
  });
  for (const panel of panelsFor(path)) {
    state.refreshed.forEach(redraw => redraw(panel));
  }
}

function withoutTrust(metadata: Record<string, any> | undefined): Record<string, any> {
  const copy = { ...(metadata ?? {}) };
  delete copy.trusted;
  return copy;
}

/** The cells a notebook's tabs show now. */
function cellsOf(panel: NotebookPanel): ICellJSON[] {
  return panel.model ? panel.model.sharedModel.cells.map(cell => cell.toJSON() as unknown as ICellJSON) : [];
}

function notify(message: string, conflicts: boolean, path: string, version?: number): void {
  const actions = [
    {
      label: 'Review the merge',
      caption: 'What the merge took from each side (nbdime diff)',
      callback: () => {
        window.open(reviewUrl(path, version), '_blank');
      }
    }
  ];
  if (conflicts) {
    const old = state.conflictNote.get(path);
    if (old) {
      Notification.dismiss(old);
    }
    state.conflictNote.set(path, Notification.warning(message, { autoClose: false, actions }));
  } else {
    Notification.info(message, { autoClose: 15000, actions });
  }
}

/** Wrap the contents manager: bases go out with saves, merged saves come back into the tab. */
const mergeSave: JupyterFrontEndPlugin<void> = {
  id: 'nbmergesave:merge-save',
  description: 'Merged saves without the File Changed dialog, shown in place.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    state.tracker = tracker;
    (window as any).nbmergesave = state; // for a look from the browser's console
    const contents = app.serviceManager.contents;
    const get = contents.get.bind(contents);
    const save = contents.save.bind(contents);
    state.rawGet = get;

    contents.get = async (path: string, options?: Contents.IFetchOptions) => {
      const model = await get(path, options);
      const info = (model as any).nbmergesave;
      if (model.type !== 'notebook' || !info) {
        return model;
      }
      if (options?.content !== false && model.content && info.sha256) {
        state.held.set(path, info.sha256);
        state.cells.set(path, cellsFingerprint(model.content.cells ?? [], model.content.metadata));
      } else if (options?.content === false && info.mergeable && state.held.has(path)) {
        // The file changed on disk, but the server will merge this tab's save with it:
        // no "File Changed" dialog. (Deleted or no longer a notebook: as JupyterLab does.)
        const known = panelsFor(path)[0]?.context.contentsModel;
        if (known) {
          return { ...model, hash: known.hash ?? model.hash, last_modified: known.last_modified };
        }
      }
      return model;
    };

    contents.save = async (path: string, options: Partial<Contents.IModel> = {}) => {
      const base = state.held.get(path);
      const sent = options.type === 'notebook' && base ? { ...options, nbmergesave_base: base } : options;
      state.saving.add(path);
      try {
        const model = await save(path, sent as Partial<Contents.IModel>);
        const reply: IMergeReply | undefined = (model as any).nbmergesave;
        if (reply?.sha256) {
          state.held.set(path, reply.sha256);
          if (reply.merged && reply.content) {
            state.mine.set(path, 'remote');
            showInPlace(path, reply.content, (sent as any).content?.cells);
            notify(describeMerge(basename(path), reply), !!reply.conflicts?.length, path, reply.version);
          }
          const saved = reply.content ?? (sent as any).content ?? {};
          state.cells.set(path, cellsFingerprint(saved.cells ?? [], saved.metadata));
        }
        return model;
      } finally {
        state.saving.delete(path);
      }
    };
  }
};

/** A bar above a conflicted cell: what the conflict is, and the three buttons. */
class ConflictBar extends Widget {
  constructor(conflict: IConflict, mine: Side, settle: (choice: Choice) => void) {
    super();
    this.addClass('nbmergesave-conflict');
    const label = document.createElement('span');
    label.className = 'nbmergesave-conflict-label';
    label.textContent = conflictLabel(conflict, mine);
    this.node.appendChild(label);
    const buttons = document.createElement('span');
    buttons.className = 'nbmergesave-buttons';
    this.node.appendChild(buttons);
    const choices: [Choice, string][] = [
      ['mine', 'Keep mine'],
      ['theirs', 'Keep theirs'],
      ['both', 'Keep both']
    ];
    for (const [choice, words] of choices) {
      const button = document.createElement('button');
      button.className = 'jp-Button jp-mod-styled nbmergesave-keep';
      button.textContent = words;
      button.onclick = event => {
        event.stopPropagation();
        settle(choice);
      };
      buttons.appendChild(button);
    }
  }
}

function settle(panel: NotebookPanel, cellWidget: Widget, kind: IConflict['kind'], choice: Choice): void {
  const shared = panel.model!.sharedModel;
  const mine = state.mine.get(panel.context.path) ?? 'remote';
  const cells = shared.cells.map(cell => cell.toJSON() as unknown as ICellJSON);
  // Where the conflict is now (settling another one may have moved it)
  const index = panel.content.widgets.indexOf(cellWidget as any);
  const conflict = findConflicts(cells, shared.getMetadata()).find(c => c.index === index && c.kind === kind);
  if (!conflict) {
    return;
  }
  if (conflict.kind === 'notebook-metadata' || conflict.kind === 'metadata') {
    const target: any = conflict.kind === 'metadata' ? shared.getCell(index) : shared;
    const settled = settleMetadata(target.getMetadata() as any, choice, mine);
    shared.transact(() => {
      for (const key of Object.keys(target.getMetadata())) {
        if (!(key in settled)) {
          target.deleteMetadata(key);
        }
      }
      target.setMetadata(settled);
    });
    return;
  }
  shared.transact(() => {
    if (conflict.note !== undefined) {
      // the note cell goes; the kept cell stays unless the side that deleted it is chosen
      shared.deleteCellRange(conflict.note, keepsEdited(conflict, choice, mine) ? conflict.note + 1 : conflict.index + 1);
      return;
    }
    if (conflict.kind === 'insert') {
      const kept = settleInsert(cells, conflict, choice, mine);
      shared.deleteCellRange(conflict.index, (conflict.end as number) + 1);
      shared.insertCells(conflict.index, kept as any);
      return;
    }
    const [first, ...more] = settleCell(cells[conflict.index], conflict, choice, mine);
    const cell = shared.getCell(conflict.index) as any;
    if (!first) {
      shared.deleteCell(conflict.index);
      return;
    }
    if (conflict.kind === 'outputs') {
      cell.setOutputs(first.outputs ?? []);
    } else {
      cell.setSource(text(first.source));
    }
    if (more.length) {
      shared.insertCells(conflict.index + 1, more as any);
    }
  });
}

const conflicts: JupyterFrontEndPlugin<void> = {
  id: 'nbmergesave:conflicts',
  description: 'Conflicted cells with Keep mine / Keep theirs / Keep both.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    const bars = new WeakMap<NotebookPanel, Widget[]>();
    const redraw = (panel: NotebookPanel) => {
      (bars.get(panel) ?? []).forEach(bar => bar.dispose());
      if (panel.isDisposed || !panel.model) {
        return;
      }
      const cells = panel.model.sharedModel.cells.map(cell => cell.toJSON() as unknown as ICellJSON);
      const found = findConflicts(cells, panel.model.sharedModel.getMetadata());
      const note = state.conflictNote.get(panel.context.path);
      if (!found.length && note) {
        Notification.dismiss(note); // all settled
        state.conflictNote.delete(panel.context.path);
      }
      const mine = state.mine.get(panel.context.path) ?? 'remote';
      const made: Widget[] = [];
      for (const conflict of found) {
        const cell = panel.content.widgets[conflict.index];
        if (!cell) {
          continue;
        }
        const bar = new ConflictBar(conflict, mine, choice => {
          settle(panel, cell, conflict.kind, choice);
          redraw(panel);
        });
        (cell.layout as PanelLayout).insertWidget(0, bar);
        cell.addClass('nbmergesave-conflicted');
        bar.disposed.connect(() => cell.removeClass('nbmergesave-conflicted'));
        made.push(bar);
      }
      bars.set(panel, made);
    };
    state.refreshed.add(redraw);
    tracker.widgetAdded.connect((_, panel) => {
      let timer: number | undefined;
      void panel.context.ready.then(() => {
        redraw(panel);
        panel.model?.contentChanged.connect(() => {
          window.clearTimeout(timer);
          timer = window.setTimeout(() => redraw(panel), 250);
        });
      });
    });
  }
};

interface IDiskState {
  sha256: string | null;
  mergeable: boolean;
  merge: { version: number; conflicts: number; local: string | null; remote: string | null } | null;
  /** Who made the version on disk (servers before 0.2 do not say). */
  by?: Writer;
  /** The server's watcher is still merging a write of the file: wait for the result. */
  settling?: boolean;
}

async function diskState(path: string): Promise<IDiskState | null> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nbmergesave', 'api', 'state') + URLExt.objectToQueryString({ path });
  const response = await ServerConnection.makeRequest(url, {}, settings);
  return response.ok ? ((await response.json()) as IDiskState) : null;
}

/** How often an open notebook asks whether its file changed (ms). */
const POLL = 1000;
/** How long a tab waits for the server's watcher to merge an outside write before showing the file as it is (ms). */
const SETTLE = 5000;

const otherTabs: JupyterFrontEndPlugin<void> = {
  id: 'nbmergesave:other-tabs',
  description: 'Tabs that are not dirty follow saves made elsewhere, in place.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    const told = new Set<string>();
    const waiting = new Map<string, number>(); // path + sha256 -> when the tab first saw it settling
    const check = async (path: string) => {
      const held = state.held.get(path);
      if (!held || state.saving.has(path) || !state.rawGet) {
        return;
      }
      const disk = await diskState(path);
      if (!disk?.sha256 || disk.sha256 === state.held.get(path) || !disk.mergeable) {
        return;
      }
      if (disk.settling) {
        // an outside write the server is merging with what was saved here: show the merge, not the write
        const key = path + disk.sha256;
        const since = waiting.get(key) ?? Date.now();
        waiting.set(key, since);
        if (Date.now() - since < SETTLE) {
          return;
        }
        waiting.delete(key);
      }
      const panel = panelsFor(path)[0];
      if (!panel?.model || panel.sessionContext.session?.kernel?.status === 'busy') {
        return; // a running cell is writing outputs: follow once it is done
      }
      const edited = () =>
        panel.model!.dirty &&
        cellsFingerprint(cellsOf(panel), panel.model!.sharedModel.getMetadata()) !== state.cells.get(path);
      if (edited()) {
        if (!told.has(path + disk.sha256)) {
          told.add(path + disk.sha256);
          Notification.info(describePending(basename(path), disk.by ?? null), { autoClose: 10000 });
        }
        return;
      }
      const model = await state.rawGet(path, { type: 'notebook', content: true, hash: true });
      const info = (model as any).nbmergesave;
      const busy = (panel.sessionContext.session?.kernel?.status as string) === 'busy'; // may have started meanwhile
      if (!info?.sha256 || busy || edited() || state.saving.has(path) || state.held.get(path) !== held) {
        return;
      }
      const wasDirty = panel.model.dirty; // only by metadata JupyterLab wrote: that stays to be saved
      state.mine.set(path, disk.merge && disk.merge.local === held ? 'local' : 'remote');
      state.held.set(path, info.sha256);
      state.cells.set(path, cellsFingerprint(model.content.cells, model.content.metadata));
      showInPlace(path, model.content);
      if (wasDirty) {
        panel.model.dirty = true;
      }
      const found = findConflicts(model.content.cells, model.content.metadata);
      const message = describeFollow(
        basename(path),
        !!disk.merge,
        found.map(c => c.index),
        disk.by ?? null,
        !disk.merge || disk.merge.local === held || disk.merge.remote === held
      );
      if (disk.merge) {
        notify(message, found.length > 0, path, disk.merge.version);
      } else {
        Notification.info(message, { autoClose: 10000 });
      }
    };
    const checkAll = () => {
      if (document.hidden) {
        return; // a tab in the background asks when it is shown again
      }
      const paths = new Set<string>();
      tracker.forEach(panel => paths.add(panel.context.path));
      paths.forEach(path => void check(path).catch(() => undefined));
    };
    window.setInterval(checkAll, POLL);
    document.addEventListener('visibilitychange', checkAll);
  }
};

export default [mergeSave, conflicts, otherTabs, storeAway];
