/**
 * The front end's logic, free of JupyterLab so that it is unit-tested on its own:
 * how to turn the notebook a tab shows into the merged one with the fewest
 * changes, where the conflicts are, how each button settles one, and what the
 * notification says.
 */

/** A cell as nbformat writes it (the parts this code looks at). */
export interface ICellJSON {
  id?: string;
  cell_type: string;
  source: string | string[];
  metadata?: Record<string, any>;
  outputs?: any[];
  execution_count?: number | null;
  attachments?: any;
  [key: string]: any;
}

/** One step that turns the cells a tab shows into the merged cells. */
export type Op =
  | { op: 'delete'; index: number; count: number }
  | { op: 'insert'; index: number; cell: ICellJSON }
  | { op: 'update'; index: number; cell: ICellJSON };

/** A cell's source as one string. */
export function text(source: string | string[] | undefined): string {
  return Array.isArray(source) ? source.join('') : source ?? '';
}

function sameCell(a: ICellJSON, b: ICellJSON): boolean {
  return (
    a.cell_type === b.cell_type &&
    text(a.source) === text(b.source) &&
    JSON.stringify(a.outputs ?? []) === JSON.stringify(b.outputs ?? []) &&
    (a.execution_count ?? null) === (b.execution_count ?? null) &&
    JSON.stringify(withoutTrust(a.metadata)) === JSON.stringify(withoutTrust(b.metadata))
  );
}

function withoutTrust(metadata: Record<string, any> | undefined): Record<string, any> {
  const copy = { ...(metadata ?? {}) };
  delete copy.trusted;
  return copy;
}

/**
 * The steps from ``current`` to ``target``, matching cells by id: cells the
 * two share stay in place (updated only where they differ), so the editor
 * state, scroll position and active cell of the untouched cells are kept.
 * Returns ``null`` when cells have no ids (nbformat < 4.5): replace them all.
 */
export function planUpdate(current: ICellJSON[], target: ICellJSON[]): Op[] | null {
  if ([...current, ...target].some(c => typeof c.id !== 'string')) {
    return null;
  }
  const ids = current.map(c => c.id as string);
  const wanted = new Set(target.map(c => c.id as string));
  const ops: Op[] = [];
  const work = [...ids];
  let i = 0;
  for (const cell of target) {
    const id = cell.id as string;
    const at = work.indexOf(id, i);
    if (at === i) {
      // in place
    } else if (at > i && work.slice(i, at).every(other => !wanted.has(other))) {
      ops.push({ op: 'delete', index: i, count: at - i });
      work.splice(i, at - i);
    } else {
      if (at > i) {
        // kept further down, but cells we still want sit in between: take it out there
        ops.push({ op: 'delete', index: at, count: 1 });
        work.splice(at, 1);
      }
      ops.push({ op: 'insert', index: i, cell });
      work.splice(i, 0, id);
      i++;
      continue;
    }
    const old = current.find(c => c.id === id) as ICellJSON;
    if (old.cell_type !== cell.cell_type) {
      ops.push({ op: 'delete', index: i, count: 1 }, { op: 'insert', index: i, cell });
    } else if (!sameCell(old, cell)) {
      ops.push({ op: 'update', index: i, cell });
    }
    i++;
  }
  if (work.length > i) {
    ops.push({ op: 'delete', index: i, count: work.length - i });
  }
  return ops;
}

/**
 * ``target`` with the cells of ``current`` that were added after ``sent`` went out (in neither
 * ``sent`` nor ``target``), each after the cell it followed: a merged save does not take away
 * a cell inserted while the save was on its way.
 */
export function keepNewCells(current: ICellJSON[], sent: ICellJSON[], target: ICellJSON[]): ICellJSON[] {
  const sentIds = new Set(sent.map(c => c.id));
  const out = [...target];
  current.forEach((cell, at) => {
    if (sentIds.has(cell.id) || out.some(t => t.id === cell.id)) {
      return;
    }
    let pos = 0;
    for (let j = at - 1; j >= 0; j--) {
      const k = out.findIndex(t => t.id === current[j].id);
      if (k >= 0) {
        pos = k + 1;
        break;
      }
    }
    out.splice(pos, 0, cell);
  });
  return out;
}

/** Apply ``ops`` to a plain list of cells (what the extension does on the notebook's shared model). */
export function applyOps(cells: ICellJSON[], ops: Op[]): ICellJSON[] {
  const out = [...cells];
  for (const op of ops) {
    if (op.op === 'delete') {
      out.splice(op.index, op.count);
    } else if (op.op === 'insert') {
      out.splice(op.index, 0, op.cell);
    } else {
      out[op.index] = op.cell;
    }
  }
  return out;
}

/**
 * What a person edits in a notebook (cell types, ids, sources, output counts), as one string:
 * a tab whose cells still match what it loaded is not holding edits, even when JupyterLab
 * marked it dirty for notebook metadata it wrote itself (the kernel's language_info).
 */
export function cellsFingerprint(cells: ICellJSON[], metadata?: Record<string, any>): string {
  const notebook = { ...(metadata ?? {}) };
  for (const key of OPENING_METADATA) {
    delete notebook[key];
  }
  return JSON.stringify([
    sorted(notebook),
    cells.map(c => [c.cell_type, c.id ?? null, text(c.source), (c.outputs ?? []).length, sorted(withoutTrust(c.metadata))])
  ]);
}

/** Notebook metadata JupyterLab writes itself when it opens a notebook and starts its kernel. */
export const OPENING_METADATA = ['language_info', 'kernelspec'];

function sorted(value: any): any {
  if (Array.isArray(value)) {
    return value.map(sorted);
  }
  if (value && typeof value === 'object') {
    return Object.keys(value)
      .sort()
      .map(key => [key, sorted(value[key])]);
  }
  return value;
}

// --- conflicts -------------------------------------------------------------

/** Which side of nbdime's markers is this tab's: the save merged (``remote``) or the file it met (``local``). */
export type Side = 'local' | 'remote';
export type Choice = 'mine' | 'theirs' | 'both';

export type ConflictKind = 'source' | 'outputs' | 'delete-edit' | 'insert' | 'metadata' | 'notebook-metadata';

export interface IConflict {
  /** Index of the cell (for 'insert': of the opening marker cell). */
  index: number;
  kind: ConflictKind;
  /** For 'insert': index of the closing marker cell. */
  end?: number;
  /** For 'delete-edit': the side that deleted the cell. */
  deleted?: Side;
  /** For 'delete-edit' as nbmergesave writes it: index of the note cell before the kept cell. */
  note?: number;
}

const OPEN = '<<<<<<< local';
const BASE = '|||||||';
const MIDDLE = '=======';
const CLOSE = '>>>>>>> remote';
const DELETED = /^<<<<<<< (LOCAL|REMOTE) CELL DELETED >>>>>>>\n?/;
/** The note cell nbmergesave puts before a cell one side deleted and the other edited. */
const DELETED_NOTE = /^<<<<<<< nbmergesave: (local|remote) deleted the next cell/;

/** The kind of conflict a cell nbmergesave added marks (its metadata), if any. */
function ourMark(cell: ICellJSON): string | undefined {
  return (cell.metadata as any)?.nbmergesave?.conflict;
}

function markerCell(cell: ICellJSON, mark: string): boolean {
  if (cell.cell_type !== 'markdown') {
    return false;
  }
  const source = text(cell.source);
  return ourMark(cell) === 'insert' ? source.startsWith(mark) : source.includes(`<b>${mark}</b>`);
}

function isMarkerOutput(output: any, mark: string): boolean {
  return output?.output_type === 'stream' && text(output.text).startsWith(mark);
}

/** nbdime's record of a metadata conflict: the base values stay, each side's change is a diff beside them. */
const METADATA_CONFLICT = 'nbdime-conflicts';

/**
 * The conflicts nbdime's markers leave in ``cells``, found from the notebook itself
 * (a conflict in the notebook's own metadata is reported on the first cell, index 0).
 */
export function findConflicts(cells: ICellJSON[], notebookMetadata?: Record<string, any>): IConflict[] {
  const found: IConflict[] = [];
  if (notebookMetadata && notebookMetadata[METADATA_CONFLICT] && cells.length) {
    found.push({ index: 0, kind: 'notebook-metadata' });
  }
  for (let index = 0; index < cells.length; index++) {
    const cell = cells[index];
    const source = text(cell.source);
    const deleted = DELETED.exec(source);
    const note = ourMark(cell) === 'delete-edit' ? DELETED_NOTE.exec(source) : null;
    if (note) {
      if (index + 1 < cells.length) {
        found.push({ index: index + 1, kind: 'delete-edit', deleted: note[1] as Side, note: index });
      }
      continue;
    }
    if (markerCell(cell, OPEN)) {
      const end = cells.findIndex((c, j) => j > index && markerCell(c, CLOSE));
      if (end > index) {
        found.push({ index, kind: 'insert', end });
        index = end;
      }
      continue;
    }
    if (deleted) {
      found.push({ index, kind: 'delete-edit', deleted: deleted[1] === 'LOCAL' ? 'local' : 'remote' });
    } else if (source.split('\n').some(line => line.startsWith(OPEN))) {
      found.push({ index, kind: 'source' });
    }
    if ((cell.outputs ?? []).some(o => isMarkerOutput(o, OPEN))) {
      found.push({ index, kind: 'outputs' });
    }
    if (cell.metadata && cell.metadata[METADATA_CONFLICT]) {
      found.push({ index, kind: 'metadata' });
    }
  }
  return found;
}

/** The source as one side wrote it: the lines outside markers, and that side's lines inside. */
export function sourceOf(source: string, side: Side): string {
  const out: string[] = [];
  let state: 'common' | 'local' | 'base' | 'remote' = 'common';
  for (const line of source.split('\n')) {
    if (line.startsWith(OPEN)) {
      state = 'local';
    } else if (state !== 'common' && line.startsWith(BASE)) {
      state = 'base';
    } else if (state !== 'common' && line === MIDDLE) {
      state = 'remote';
    } else if (state !== 'common' && line.startsWith(CLOSE)) {
      state = 'common';
    } else if (state === 'common' || state === side) {
      out.push(line);
    }
  }
  return out.join('\n');
}

function other(side: Side): Side {
  return side === 'local' ? 'remote' : 'local';
}

function sideOf(choice: Exclude<Choice, 'both'>, mine: Side): Side {
  return choice === 'mine' ? mine : other(mine);
}

/** Whether a delete-versus-edit conflict settled with ``choice`` keeps the edited cell (Keep both keeps it). */
export function keepsEdited(conflict: IConflict, choice: Choice, mine: Side): boolean {
  return choice === 'both' || sideOf(choice, mine) !== conflict.deleted;
}

/**
 * The cells that replace a conflicted cell once settled: none (the cell goes),
 * one, or two (Keep both: the two versions as consecutive cells, in the order
 * the markers show them).
 */
export function settleCell(cell: ICellJSON, conflict: IConflict, choice: Choice, mine: Side): ICellJSON[] {
  const source = text(cell.source);
  if (conflict.kind === 'delete-edit') {
    return keepsEdited(conflict, choice, mine) ? [{ ...cell, source: source.replace(DELETED, '') }] : [];
  }
  if (conflict.kind === 'outputs') {
    return [{ ...cell, outputs: settleOutputs(cell.outputs ?? [], choice, mine) }];
  }
  if (choice === 'both') {
    const first = { ...cell, source: sourceOf(source, 'local') };
    const second = { ...cell, source: sourceOf(source, 'remote') };
    delete second.id;
    if (second.cell_type === 'code') {
      second.outputs = [];
      second.execution_count = null;
    }
    return [first, second];
  }
  return [{ ...cell, source: sourceOf(source, sideOf(choice, mine)) }];
}

/**
 * Consecutive stream outputs of one stream (stdout, stderr) as one output, as Jupyter keeps
 * them: JupyterLab's output model joins them itself, and fails when handed them separately.
 */
export function coalesceStreams(outputs: any[]): any[] {
  const out: any[] = [];
  for (const output of outputs) {
    const last = out[out.length - 1];
    if (output?.output_type === 'stream' && last?.output_type === 'stream' && last.name === output.name) {
      out[out.length - 1] = { ...last, text: text(last.text) + text(output.text) };
    } else {
      out.push(output);
    }
  }
  return out;
}

/** Outputs between nbdime's marker outputs: one side's, or both one after the other. */
export function settleOutputs(outputs: any[], choice: Choice, mine: Side): any[] {
  return coalesceStreams(pickOutputs(outputs, choice, mine));
}

function pickOutputs(outputs: any[], choice: Choice, mine: Side): any[] {
  const out: any[] = [];
  let state: 'common' | Side = 'common';
  for (const output of outputs) {
    if (isMarkerOutput(output, OPEN)) {
      state = 'local';
    } else if (state !== 'common' && isMarkerOutput(output, MIDDLE)) {
      state = 'remote';
    } else if (state !== 'common' && isMarkerOutput(output, CLOSE)) {
      state = 'common';
    } else if (state === 'common' || choice === 'both' || state === sideOf(choice, mine)) {
      out.push(output);
    }
  }
  return out;
}

/** Apply one of nbdime's diffs (dict ops add/remove/replace/patch, list ops addrange/removerange/patch). */
export function applyDiff(value: any, diff: any[]): any {
  if (typeof value === 'string') {
    const lines = value.includes('\n') ? value.match(/[^\n]*\n|[^\n]+$/g) ?? [] : value.split('');
    return applyDiff(lines, diff).join('');
  }
  if (Array.isArray(value)) {
    const out: any[] = [];
    let taken = 0;
    const ops = [...diff].sort((a, b) => a.key - b.key || (a.op === 'addrange' ? -1 : b.op === 'addrange' ? 1 : 0));
    for (const op of ops) {
      while (taken < op.key && taken < value.length) {
        out.push(value[taken++]);
      }
      if (op.op === 'addrange') {
        out.push(...op.valuelist);
      } else if (op.op === 'removerange') {
        taken += op.length;
      } else if (op.op === 'patch') {
        out.push(applyDiff(value[taken++], op.diff));
      } else if (op.op === 'replace') {
        out.push(op.value);
        taken++;
      }
    }
    return out.concat(value.slice(taken));
  }
  const out: Record<string, any> = { ...(value ?? {}) };
  for (const op of diff) {
    if (op.op === 'add' || op.op === 'replace') {
      out[op.key] = op.value;
    } else if (op.op === 'remove') {
      delete out[op.key];
    } else if (op.op === 'patch') {
      out[op.key] = applyDiff(out[op.key], op.diff);
    }
  }
  return out;
}

/**
 * Metadata once a metadata conflict is settled: the base values with theirs or my
 * changes applied; Keep both applies both (lists joined, my value where both set a key).
 */
export function settleMetadata(metadata: Record<string, any>, choice: Choice, mine: Side): Record<string, any> {
  const conflict = metadata[METADATA_CONFLICT] ?? {};
  const base = { ...metadata };
  delete base[METADATA_CONFLICT];
  const diffOf = (side: Side) => (side === 'local' ? conflict.local_diff : conflict.remote_diff) ?? [];
  if (choice !== 'both') {
    return applyDiff(base, diffOf(sideOf(choice, mine)));
  }
  const theirs = applyDiff(base, diffOf(other(mine)));
  const ours = applyDiff(base, diffOf(mine));
  const both: Record<string, any> = { ...theirs };
  for (const [key, value] of Object.entries(ours)) {
    if (Array.isArray(value) && Array.isArray(theirs[key])) {
      both[key] = [...theirs[key], ...value.filter(v => !theirs[key].some((t: any) => JSON.stringify(t) === JSON.stringify(v)))];
    } else if (JSON.stringify(value) !== JSON.stringify(base[key]) || !(key in theirs)) {
      both[key] = value;
    }
  }
  for (const key of Object.keys(base)) {
    if (!(key in ours) || !(key in theirs)) {
      delete both[key]; // one side removed it, and the other did not change it
    }
  }
  return both;
}

/** The cells that replace an 'insert' conflict (marker cells ``conflict.index`` to ``conflict.end``). */
export function settleInsert(cells: ICellJSON[], conflict: IConflict, choice: Choice, mine: Side): ICellJSON[] {
  const region = cells.slice(conflict.index + 1, conflict.end);
  const middle = region.findIndex(c => markerCell(c, MIDDLE));
  const local = middle < 0 ? region : region.slice(0, middle);
  const remote = middle < 0 ? [] : region.slice(middle + 1);
  if (choice === 'both') {
    return [...local, ...remote];
  }
  return sideOf(choice, mine) === 'local' ? local : remote;
}

// --- words -----------------------------------------------------------------

export interface IMergeReply {
  merged?: boolean;
  sha256?: string;
  version?: number;
  local?: string;
  remote?: string;
  changes?: { added: number; changed: number; removed: number };
  conflicts?: { cell: number | null; kind?: string; words?: string }[];
  content?: { cells: ICellJSON[]; [key: string]: any };
}

function count(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

/** JupyterLab cuts notifications at 140 characters. */
export const MAX_MESSAGE = 140;

/** What the notification says after a merge, in plain words (short: JupyterLab cuts long ones). */
export function describeMerge(name: string, reply: IMergeReply): string {
  const c = reply.changes;
  const parts: string[] = [];
  if (c) {
    if (c.added) {
      parts.push(`${count(c.added, 'cell')} added`);
    }
    if (c.changed) {
      parts.push(`${count(c.changed, 'cell')} changed`);
    }
    if (c.removed) {
      parts.push(`${count(c.removed, 'cell')} removed`);
    }
  }
  const what = parts.length ? parts.join(', ') : 'changes';
  const conflicts = reply.conflicts ?? [];
  const at = (x: { cell: number | null }) => (x.cell === null || x.cell === undefined ? "the notebook's metadata" : `cell ${x.cell + 1}`);
  let message: string;
  if (!conflicts.length) {
    message = `${name} had changed elsewhere (${what}); your save was merged with it.`;
  } else if (conflicts.length === 1) {
    const x = conflicts[0];
    message = `1 conflict in ${at(x)} — ${x.words ?? 'both changed it'}. Merged; settle it in the marked cell.`;
  } else {
    const numbers = conflicts.filter(x => x.cell !== null && x.cell !== undefined).map(x => (x.cell as number) + 1);
    const places = numbers.length ? [`${numbers.length === 1 ? 'cell' : 'cells'} ${numbers.join(', ')}`] : [];
    if (numbers.length < conflicts.length) {
      places.push("the notebook's metadata");
    }
    message = `${conflicts.length} conflicts, in ${places.join(' and ')}. Merged; settle them in the marked cells.`;
  }
  return message.length > MAX_MESSAGE ? message.slice(0, MAX_MESSAGE - 1) + '…' : message;
}

/**
 * Who made the version on disk, as the server's state route says: a save through Jupyter, a write
 * made outside Jupyter (an agent, a script, a sync tool), git, a tool writing while watching was
 * paused, or ``null`` (not known: the server does not watch its folder).
 */
export type Writer = 'jupyter' | 'outside' | 'git' | 'paused' | null;

/** What happened to the file, in the words a tab uses (no trailing punctuation). */
function changedBy(name: string, by: Writer | undefined): string {
  switch (by) {
    case 'outside':
      return `${name} was changed outside Jupyter`;
    case 'git':
      return `${name} was replaced by git`;
    case 'paused':
      return `${name} was rewritten by a tool while merging was paused`;
    default:
      return `${name} was saved elsewhere`;
  }
}

function cut(message: string): string {
  return message.length > MAX_MESSAGE ? message.slice(0, MAX_MESSAGE - 1) + '…' : message;
}

/**
 * What a tab that followed a change of its file says. ``merged``: the version it now shows is a
 * merge; ``mine``: one side of that merge is what this tab had saved (or loaded) last.
 */
export function describeFollow(
  name: string,
  merged: boolean,
  conflictCells: number[],
  by: Writer = null,
  mine = true
): string {
  let message: string;
  if (by === 'outside' && merged) {
    message = `${changedBy(name, by)}; merged with ${mine ? 'your' : 'the'} saved edits.`;
  } else if (by === 'outside' || by === 'git' || by === 'paused') {
    message = `${changedBy(name, by)}; this tab now shows it.`;
  } else {
    message = `${name} was saved elsewhere${merged ? ' (merged)' : ''}; this tab now shows it.`;
  }
  if (conflictCells.length === 1) {
    message = `1 conflict in cell ${conflictCells[0] + 1}. ` + message;
  } else if (conflictCells.length) {
    message = `${conflictCells.length} conflicts, in cells ${conflictCells.map(i => i + 1).join(', ')}. ` + message;
  }
  return cut(message);
}

/** What a tab with unsaved edits says when its file changed: nothing is lost, the next save merges. */
export function describePending(name: string, by: Writer = null): string {
  return cut(
    `${changedBy(name, by)}. Your next save merges your edits with it (nothing is overwritten); this tab then shows the result.`
  );
}

/** The words on a conflicted cell's bar. */
export function conflictLabel(conflict: IConflict, mine: Side): string {
  switch (conflict.kind) {
    case 'source':
      return mine === 'remote'
        ? 'Conflict: both changed the same lines. Theirs: between <<<<<<< and =======; yours: between ======= and >>>>>>>.'
        : 'Conflict: both changed the same lines. Yours: between <<<<<<< and =======; theirs: between ======= and >>>>>>>.';
    case 'outputs':
      return 'Conflict: both changed the outputs of this cell (both are shown, between marker lines).';
    case 'delete-edit':
      return conflict.deleted === mine
        ? 'Conflict: you deleted this cell, and someone else edited it.'
        : 'Conflict: someone else deleted this cell, and you edited it.';
    case 'metadata':
      return "Conflict: both changed this cell's metadata (tags, settings). Keep both joins lists; elsewhere yours wins.";
    case 'notebook-metadata':
      return "Conflict: both changed the notebook's metadata. Keep both joins lists; elsewhere yours wins.";
    case 'insert':
      return mine === 'remote'
        ? 'Conflict: both added cells here. Theirs come first, then yours, between the marker cells.'
        : 'Conflict: both added cells here. Yours come first, then theirs, between the marker cells.';
  }
}
