// Validates Kubernetes manifests against the API schemas bundled in the npm
// package kubernetes-models (offline once installed: `make deps-test` runs
// `npm ci` here). Usage: node validate.mjs FILE.yaml...
// Prints "ok KIND/NAME (FILE)" or "FAIL KIND/NAME (FILE): errors" for every
// document; exits 1 when one fails. Types, formats, enums and required
// fields are checked; unknown fields are not (the Kubernetes schemas allow
// them): test_k8s.py checks the security fields by name.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

let failed = 0;
for (const file of process.argv.slice(2)) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) {
      console.log(`FAIL (${file}): YAML: ${doc.errors[0].message}`);
      failed++;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    const what = `${obj.kind}/${obj.metadata?.name} (${file})`;
    const av = String(obj.apiVersion || "");
    const path = av.includes("/") ? av : `v1`; // "apps/v1" -> apps/v1, core "v1" -> v1
    if (!obj.kind || !/^[A-Za-z0-9.\/-]+$/.test(path) || !/^[A-Za-z]+$/.test(obj.kind)) {
      console.log(`FAIL ${what}: no apiVersion or kind`);
      failed++;
      continue;
    }
    let Model;
    try {
      Model = (await import(`kubernetes-models/${path}/${obj.kind}`))[obj.kind];
    } catch (e) {
      console.log(`FAIL ${what}: unknown apiVersion/kind ${av}/${obj.kind}`);
      failed++;
      continue;
    }
    try {
      new Model(obj).validate();
      console.log(`ok   ${what}`);
    } catch (e) {
      console.log(`FAIL ${what}: ${e.message}`);
      failed++;
    }
  }
}
process.exit(failed ? 1 : 0);
