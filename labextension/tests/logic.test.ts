import {
  ICellJSON,
  MAX_MESSAGE,
  applyDiff,
  applyOps,
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
  settleOutputs,
  sourceOf
} from '../src/logic';

const code = (id: string, source: string, outputs: any[] = []): ICellJSON => ({
  id,
  cell_type: 'code',
  source,
  metadata: {},
  outputs,
  execution_count: null
});
const stream = (text: string, name = 'stdout') => ({ output_type: 'stream', name, text });
const mark = (text: string): ICellJSON => ({
  id: text,
  cell_type: 'markdown',
  source: `<span style="color:red"><b>${text}</b></span>`,
  metadata: {}
});

describe('planUpdate', () => {
  const a = code('a', 'a'), b = code('b', 'b'), c = code('c', 'c'), d = code('d', 'd');

  it('leaves identical notebooks alone', () => {
    expect(planUpdate([a, b, c], [a, b, c])).toEqual([]);
  });

  it('updates only the cells that changed', () => {
    const ops = planUpdate([a, b, c], [a, code('b', 'B'), c]);
    expect(ops).toEqual([{ op: 'update', index: 1, cell: code('b', 'B') }]);
  });

  it.each([
    [[a, b, c], [a, d, b, c]],
    [[a, b, c], [a, c]],
    [[a, b, c], [c, b, a]],
    [[a, b, c, d], [d]],
    [[], [a, b]],
    [[a, b], []],
    [[a, b, c], [b, d, a, code('c', 'changed')]]
  ])('turns %j into %j', (current, target) => {
    const ops = planUpdate(current, target)!;
    expect(applyOps(current, ops)).toEqual(target);
  });

  it('keeps cells it does not need to touch (no delete and insert of the same id)', () => {
    const ops = planUpdate([a, b, c, d], [a, b, code('new', 'n'), c, d])!;
    expect(ops).toEqual([{ op: 'insert', index: 2, cell: code('new', 'n') }]);
  });

  it('gives up on cells without ids', () => {
    expect(planUpdate([{ cell_type: 'code', source: 'x' }], [a])).toBeNull();
  });
});

describe('conflicts', () => {
  const source = '<<<<<<< local\na = 10\n=======\na = 20\n>>>>>>> remote\nb = 2';

  it('finds each kind nbdime marks', () => {
    const cells = [
      code('s', source),
      code('o', 'x', [stream('<<<<<<< local\n', 'stderr'), stream('l\n'), stream('=======\n', 'stderr'), stream('r\n'), stream('>>>>>>> remote\n', 'stderr')]),
      code('d', '<<<<<<< LOCAL CELL DELETED >>>>>>>\ny = 1'),
      code('plain', 'z'),
      mark('<<<<<<< local'),
      code('n1', 'one'),
      mark('======='),
      code('n2', 'two'),
      mark('>>>>>>> remote')
    ];
    expect(findConflicts(cells)).toEqual([
      { index: 0, kind: 'source' },
      { index: 1, kind: 'outputs' },
      { index: 2, kind: 'delete-edit', deleted: 'local' },
      { index: 4, kind: 'insert', end: 8 }
    ]);
  });

  it('takes one side of a source conflict, keeping the common lines', () => {
    expect(sourceOf(source, 'local')).toBe('a = 10\nb = 2');
    expect(sourceOf(source, 'remote')).toBe('a = 20\nb = 2');
    expect(sourceOf('<<<<<<< local\nx\n||||||| base\no\n=======\ny\n>>>>>>> remote', 'remote')).toBe('y');
  });

  it('settles a source conflict with each button (mine is the save: remote)', () => {
    const cell = code('s', source);
    const conflict = { index: 0, kind: 'source' as const };
    expect(settleCell(cell, conflict, 'mine', 'remote').map(c => c.source)).toEqual(['a = 20\nb = 2']);
    expect(settleCell(cell, conflict, 'theirs', 'remote').map(c => c.source)).toEqual(['a = 10\nb = 2']);
    const both = settleCell(cell, conflict, 'both', 'remote');
    expect(both.map(c => c.source)).toEqual(['a = 10\nb = 2', 'a = 20\nb = 2']);
    expect(both[0].id).toBe('s');
    expect(both[1].id).toBeUndefined();
  });

  it('swaps sides for a tab whose version was the one on disk (local)', () => {
    const cell = code('s', source);
    expect(settleCell(cell, { index: 0, kind: 'source' }, 'mine', 'local')[0].source).toBe('a = 10\nb = 2');
  });

  it('settles delete-versus-edit', () => {
    const cell = code('d', '<<<<<<< LOCAL CELL DELETED >>>>>>>\ny = 1');
    const conflict = { index: 0, kind: 'delete-edit' as const, deleted: 'local' as const };
    expect(settleCell(cell, conflict, 'theirs', 'remote')).toEqual([]);
    expect(settleCell(cell, conflict, 'mine', 'remote').map(c => c.source)).toEqual(['y = 1']);
    expect(settleCell(cell, conflict, 'both', 'remote').map(c => c.source)).toEqual(['y = 1']);
  });

  it('settles outputs', () => {
    const outputs = [stream('<<<<<<< local\n', 'stderr'), stream('l\n'), stream('=======\n', 'stderr'), stream('r\n'), stream('>>>>>>> remote\n', 'stderr')];
    expect(settleOutputs(outputs, 'mine', 'remote')).toEqual([stream('r\n')]);
    expect(settleOutputs(outputs, 'theirs', 'remote')).toEqual([stream('l\n')]);
    expect(settleOutputs(outputs, 'both', 'remote')).toEqual([stream('l\nr\n')]); // one stdout, as Jupyter keeps it
  });

  it('settles cells both inserted', () => {
    const cells = [mark('<<<<<<< local'), code('n1', 'one'), mark('======='), code('n2', 'two'), mark('>>>>>>> remote')];
    const conflict = { index: 0, kind: 'insert' as const, end: 4 };
    expect(settleInsert(cells, conflict, 'mine', 'remote').map(c => c.id)).toEqual(['n2']);
    expect(settleInsert(cells, conflict, 'theirs', 'remote').map(c => c.id)).toEqual(['n1']);
    expect(settleInsert(cells, conflict, 'both', 'remote').map(c => c.id)).toEqual(['n1', 'n2']);
  });
});

describe('conflicts as nbmergesave writes them', () => {
  // the forms of nbmergesave/merge.py: marker cells and note cells carry metadata.nbmergesave.conflict
  const ours = (source: string, kind: string): ICellJSON => ({ cell_type: 'markdown', source, metadata: { nbmergesave: { conflict: kind } } });
  const note = ours('<<<<<<< nbmergesave: local deleted the next cell, remote edited it >>>>>>>\n\n**Merge conflict:** ...', 'delete-edit');

  it('finds a delete-versus-edit note and cells both inserted', () => {
    const cells = [code('a', 'a = 1'), note, code('kept', 'y = 2'), ours('<<<<<<< local', 'insert'), code('n1', 'one'),
      ours('=======', 'insert'), code('n2', 'two'), ours('>>>>>>> remote', 'insert')];
    expect(findConflicts(cells)).toEqual([
      { index: 2, kind: 'delete-edit', deleted: 'local', note: 1 },
      { index: 3, kind: 'insert', end: 7 }
    ]);
  });

  it('keeps the edited cell unless the side that deleted it is chosen', () => {
    const conflict = findConflicts([note, code('kept', 'y = 2')])[0];
    expect(keepsEdited(conflict, 'mine', 'local')).toBe(false); // this tab deleted it
    expect(keepsEdited(conflict, 'theirs', 'local')).toBe(true);
    expect(keepsEdited(conflict, 'mine', 'remote')).toBe(true); // this tab edited it
    expect(keepsEdited(conflict, 'theirs', 'remote')).toBe(false);
    expect(keepsEdited(conflict, 'both', 'local')).toBe(true);
  });

  it('settles cells both inserted between its marker cells', () => {
    const cells = [ours('<<<<<<< local', 'insert'), code('n1', 'one'), ours('=======', 'insert'), code('n2', 'two'), ours('>>>>>>> remote', 'insert')];
    const conflict = findConflicts(cells)[0];
    expect(settleInsert(cells, conflict, 'mine', 'remote').map(c => c.id)).toEqual(['n2']);
    expect(settleInsert(cells, conflict, 'both', 'remote').map(c => c.id)).toEqual(['n1', 'n2']);
  });
});

describe('describeMerge', () => {
  it('says what the other side did', () => {
    expect(describeMerge('a.ipynb', { merged: true, changes: { added: 1, changed: 2, removed: 0 } })).toBe(
      'a.ipynb had changed elsewhere (1 cell added, 2 cells changed); your save was merged with it.'
    );
  });

  it('names the conflicted cell, counting from 1', () => {
    const message = describeMerge('a.ipynb', {
      merged: true,
      changes: { added: 0, changed: 1, removed: 0 },
      conflicts: [{ cell: 2, kind: 'source', words: 'both changed the same lines' }]
    });
    expect(message.startsWith('1 conflict in cell 3 — both changed the same lines.')).toBe(true);
  });

  it('stays short enough for a notification', () => {
    const conflicts = Array.from({ length: 60 }, (_, i) => ({ cell: i, words: 'x' }));
    expect(describeMerge('a-very-long-notebook-name.ipynb', { conflicts }).length).toBeLessThanOrEqual(MAX_MESSAGE);
  });
});

describe('metadata conflicts', () => {
  const metadata = {
    tags: ['x'],
    other: 1,
    'nbdime-conflicts': {
      local_diff: [{ op: 'patch', key: 'tags', diff: [{ op: 'addrange', key: 0, valuelist: ['local'] }, { op: 'removerange', key: 0, length: 1 }] }],
      remote_diff: [
        { op: 'patch', key: 'tags', diff: [{ op: 'addrange', key: 0, valuelist: ['remote'] }, { op: 'removerange', key: 0, length: 1 }] },
        { op: 'replace', key: 'other', value: 2 }
      ]
    }
  };

  it('is found on the cell, and on the first cell for the notebook', () => {
    expect(findConflicts([code('a', 'x'), { ...code('b', 'y'), metadata }], { 'nbdime-conflicts': {} })).toEqual([
      { index: 0, kind: 'notebook-metadata' },
      { index: 1, kind: 'metadata' }
    ]);
  });

  it('settles with each button', () => {
    expect(settleMetadata(metadata, 'mine', 'remote')).toEqual({ tags: ['remote'], other: 2 });
    expect(settleMetadata(metadata, 'theirs', 'remote')).toEqual({ tags: ['local'], other: 1 });
    expect(settleMetadata(metadata, 'both', 'remote')).toEqual({ tags: ['local', 'remote'], other: 2 });
  });

  it('applies nbdime diffs to strings by line', () => {
    expect(applyDiff('a\nb\n', [{ op: 'addrange', key: 1, valuelist: ['new\n'] }])).toBe('a\nnew\nb\n');
  });
});

describe('describeMerge with the notebook metadata', () => {
  it('names it in words', () => {
    const message = describeMerge('a.ipynb', {
      conflicts: [
        { cell: 1, words: 'x' },
        { cell: null, words: 'y' }
      ]
    });
    expect(message.startsWith("2 conflicts, in cell 2 and the notebook's metadata.")).toBe(true);
  });
});

describe('keepNewCells', () => {
  const a = code('a', 'a'), b = code('b', 'b'), c = code('c', 'c'), n = code('n', 'typed during the save');

  it('keeps a cell added while the save was on its way, after the cell it followed', () => {
    const merged = [code('x', 'theirs'), a, b, c];
    expect(keepNewCells([a, b, n, c], [a, b, c], merged).map(cell => cell.id)).toEqual(['x', 'a', 'b', 'n', 'c']);
  });

  it('leaves cells the merge removed removed', () => {
    expect(keepNewCells([a, b, c], [a, b, c], [a, c]).map(cell => cell.id)).toEqual(['a', 'c']);
  });
});

describe('describeFollow: who changed the file a tab follows', () => {
  it('names a write made outside Jupyter that was merged with the edits saved here', () => {
    expect(describeFollow('nb.ipynb', true, [], 'outside')).toBe(
      'nb.ipynb was changed outside Jupyter; merged with your saved edits.'
    );
  });

  it('says whose edits were merged when this tab had not saved them', () => {
    expect(describeFollow('nb.ipynb', true, [], 'outside', false)).toBe(
      'nb.ipynb was changed outside Jupyter; merged with the saved edits.'
    );
  });

  it('names an outside write that replaced the file it was made from (no merge needed)', () => {
    expect(describeFollow('nb.ipynb', false, [], 'outside')).toBe('nb.ipynb was changed outside Jupyter; this tab now shows it.');
  });

  it('names git, which is never merged', () => {
    expect(describeFollow('nb.ipynb', false, [], 'git')).toBe('nb.ipynb was replaced by git; this tab now shows it.');
  });

  it('names a tool that wrote while merging was paused', () => {
    expect(describeFollow('nb.ipynb', false, [], 'paused')).toBe(
      'nb.ipynb was rewritten by a tool while merging was paused; this tab now shows it.'
    );
  });

  it('keeps the words for another Jupyter save, and for servers that do not say who wrote', () => {
    expect(describeFollow('nb.ipynb', true, [], 'jupyter')).toBe('nb.ipynb was saved elsewhere (merged); this tab now shows it.');
    expect(describeFollow('nb.ipynb', false, [])).toBe('nb.ipynb was saved elsewhere; this tab now shows it.');
  });

  it('puts conflicts first, as for a conflicting save', () => {
    expect(describeFollow('nb.ipynb', true, [2], 'outside')).toBe(
      '1 conflict in cell 3. nb.ipynb was changed outside Jupyter; merged with your saved edits.'
    );
    expect(describeFollow('nb.ipynb', true, [0, 4], 'outside')).toBe(
      '2 conflicts, in cells 1, 5. nb.ipynb was changed outside Jupyter; merged with your saved edits.'
    );
  });

  it('stays within what a notification shows', () => {
    const long = 'a'.repeat(200) + '.ipynb';
    const message = describeFollow(long, true, [1, 2, 3], 'outside');
    expect(message.length).toBe(MAX_MESSAGE);
    expect(message.endsWith('…')).toBe(true);
  });
});

describe('describePending: a tab with unsaved edits whose file changed', () => {
  it('says who changed it and that the next save merges', () => {
    expect(describePending('nb.ipynb', 'outside')).toBe(
      'nb.ipynb was changed outside Jupyter. Your next save merges your edits with it (nothing is overwritten); this tab then shows the result.'
    );
    expect(describePending('nb.ipynb', 'git').startsWith('nb.ipynb was replaced by git. Your next save merges')).toBe(true);
    expect(describePending('nb.ipynb').startsWith('nb.ipynb was saved elsewhere. Your next save merges')).toBe(true);
    expect(describePending('nb.ipynb', 'outside').length).toBeLessThanOrEqual(MAX_MESSAGE);
  });
});
