// The hash of the extension's source, recorded beside the built bundle
// (build-source.json) so that a test can tell the shipped bundle was built
// from the source in the repository. Same recipe as tests/test_labextension.py.
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const inputs = ['package.json', 'tsconfig.json', 'src', 'style'];

function files(rel) {
  const full = path.join(root, rel);
  if (fs.statSync(full).isDirectory()) {
    return fs.readdirSync(full).sort().flatMap(name => files(path.posix.join(rel, name)));
  }
  return [rel];
}

function sourceHash() {
  const hash = crypto.createHash('sha256');
  for (const rel of inputs.flatMap(files).sort()) {
    hash.update(rel + '\0');
    hash.update(fs.readFileSync(path.join(root, rel)));
    hash.update('\0');
  }
  return hash.digest('hex');
}

if (process.argv.includes('--write')) {
  const out = path.resolve(root, '..', 'nbmergesave', 'labextension', 'build-source.json');
  fs.writeFileSync(out, JSON.stringify({ sha256: sourceHash(), inputs }, null, 2) + '\n');
  console.log(`recorded the source hash in ${path.relative(root, out)}`);
} else {
  console.log(sourceHash());
}
