#!/usr/bin/env node
// Validate glTF / GLB files with the Khronos glTF validator and print one JSON report each.
//
// Usage: node validate.js FILE.glb [FILE2.glb ...]
// Prints a JSON array of {"file", "report"} objects on stdout, where "report" is the
// validator's own report (report.issues.numErrors, .numWarnings, .messages ...).
// Exit status: 0 when every file has zero errors, 1 when any has errors, 2 on bad usage
// or when the validator could not read a file at all.
'use strict';

const fs = require('fs');
const path = require('path');
const validator = require('gltf-validator');

async function main(files) {
  if (files.length === 0) {
    console.error('usage: node validate.js FILE.glb [FILE2.glb ...]');
    return 2;
  }
  const results = [];
  let anyErrors = false;
  for (const file of files) {
    const bytes = new Uint8Array(fs.readFileSync(file));
    const report = await validator.validateBytes(bytes, {
      uri: path.basename(file),
      maxIssues: 0,
      writeTimestamp: false,
    });
    if (report.issues.numErrors > 0) anyErrors = true;
    results.push({ file, report });
  }
  process.stdout.write(JSON.stringify({ validatorVersion: validator.version(), results }, null, 1));
  return anyErrors ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (error) => { console.error(String(error)); process.exitCode = 2; },
);
