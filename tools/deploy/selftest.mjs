#!/usr/bin/env node
// Proves the manifest checks can fail: takes a rendered environment that passes
// (kubectl kustomize deploy/k8s/overlays/production) and the Secret template, breaks them one
// way at a time, and expects k8s-lib/docket-policy to name each breakage.
// Usage: node selftest.mjs RENDERED.yaml SECRETS-TEMPLATE.yaml
// Exit 0 when every broken copy is caught (and the intact one passes), 1 otherwise.
import fs from "node:fs";
import YAML from "yaml";
import { checkDocketPolicy } from "./docket-policy.mjs";
import { validateObjects } from "./k8s-lib.mjs";

const [renderedFile, secretsFile] = process.argv.slice(2);
if (!renderedFile || !secretsFile) {
  console.error("usage: node selftest.mjs RENDERED.yaml SECRETS-TEMPLATE.yaml");
  process.exit(2);
}
const load = (f) => YAML.parseAllDocuments(fs.readFileSync(f, "utf8")).map((d) => d.toJS()).filter(Boolean);
const rendered = load(renderedFile);
const secrets = load(secretsFile);

const find = (objs, kind, name) => objs.find((o) => o.kind === kind && o.metadata.name === name);
const dep = (objs, name) => find(objs, "Deployment", name);
const main = (objs, name) => dep(objs, name).spec.template.spec.containers[0];

async function problemsOf(objs, { policy = true, secretTemplate = false } = {}) {
  const p = await validateObjects(objs, { secretTemplate });
  if (policy) p.push(...checkDocketPolicy(objs));
  return p;
}

const cases = [
  ["misspelt field (readinesProbe)", (o) => {
    const c = main(o, "auth-service");
    c.readinesProbe = c.readinessProbe;
    delete c.readinessProbe;
  }, "/spec/template/spec/containers/0/readinesProbe: unknown field"],
  ["unknown field (spec.replica)", (o) => { dep(o, "task-service").spec.replica = 3; }, "/spec/replica: unknown field"],
  ["wrong type (containerPort as a string)", (o) => { main(o, "user-service").ports[0].containerPort = "3002"; }, "containerPort: type"],
  ["bad enum (Service type)", (o) => { find(o, "Service", "task-service").spec.type = "Loadbalancer"; }, "/spec/type: enum"],
  ["unknown kind", (o) => { o.push({ apiVersion: "apps/v1", kind: "Deploymnet", metadata: { name: "x", namespace: "production" } }); }, "no schema for apps/v1 Deploymnet"],
  ["missing memory limit", (o) => { delete main(o, "auth-service").resources.limits.memory; }, "resources.limits.memory missing"],
  ["request above limit", (o) => { main(o, "auth-service").resources.requests.cpu = "2"; }, "cpu request 2 above its limit"],
  ["root allowed", (o) => { dep(o, "user-service").spec.template.spec.securityContext.runAsNonRoot = false; }, "runAsNonRoot must be true"],
  ["writable root filesystem", (o) => { main(o, "api-gateway").securityContext.readOnlyRootFilesystem = false; }, "readOnlyRootFilesystem must be true"],
  ["replicas beside the HPA", (o) => { dep(o, "auth-service").spec.replicas = 3; }, "sets replicas"],
  ["readiness on /health", (o) => { main(o, "task-service").readinessProbe.httpGet.path = "/health"; }, "readinessProbe must GET /ready"],
  ["secret as a literal", (o) => {
    const e = main(o, "auth-service").env.find((x) => x.name === "DATABASE_URL");
    delete e.valueFrom;
    e.value = "postgres://docket:hunter2@db:5432/docket";
  }, "env DATABASE_URL must come from secretKeyRef"],
  ["unknown secret", (o) => { main(o, "task-service").env.find((x) => x.name === "JWT_SECRET").valueFrom.secretKeyRef.name = "jwt"; }, "reads jwt/secret"],
  ["HPA CPU target", (o) => { find(o, "HorizontalPodAutoscaler", "user-service-hpa").spec.metrics[0].resource.target.averageUtilization = 75; }, "CPU target must be 70"],
  ["HPA without requests_per_second", (o) => { find(o, "HorizontalPodAutoscaler", "task-service-hpa").spec.metrics.pop(); }, "requests_per_second"],
  ["VPA pointing nowhere", (o) => { find(o, "VerticalPodAutoscaler", "task-service-vpa").spec.targetRef.name = "tasks"; }, "targets tasks, which is not in the render"],
  ["VPA bounds", (o) => { find(o, "VerticalPodAutoscaler", "auth-service-vpa").spec.resourcePolicy.containerPolicies[0].maxAllowed.memory = "4Gi"; }, "maxAllowed must be"],
  ["Service selector", (o) => { find(o, "Service", "user-service").spec.selector.app = "users"; }, "selector does not match"],
  ["Ingress to a backend", (o) => { find(o, "Ingress", "api-ingress").spec.rules[0].http.paths[0].backend.service.name = "auth-service"; }, "only api-gateway is exposed"],
  ["image latest", (o) => { main(o, "notification-service").image = "docket/notification-service:latest"; }, "needs a tag other than latest"],
  ["missing ConfigMap", (o) => { o.splice(o.findIndex((x) => x.kind === "ConfigMap" && x.metadata.name.startsWith("task-service-config")), 1); }, "is not in the render"],
  ["Secret in the render", (o) => { o.push({ apiVersion: "v1", kind: "Secret", metadata: { name: "jwt-secret", namespace: "production" }, stringData: { secret: "x" } }); }, "Secrets never go into the manifests"],
  ["image without a registry", (o) => { main(o, "task-service").image = "docket/task-service:main"; }, "names no registry"],
  ["one replica rolled with maxUnavailable 1", (o) => { find(o, "HorizontalPodAutoscaler", "auth-service-hpa").spec.minReplicas = 1; }, "maxUnavailable 0 and maxSurge 1"],
  ["Ingress path / to the gateway", (o) => { find(o, "Ingress", "api-ingress").spec.rules[0].http.paths[0].path = "/"; }, "route only /api to api-gateway"],
  ["cert-manager solver blocked", (o) => { o.splice(o.findIndex((x) => x.kind === "NetworkPolicy" && x.metadata.name === "cert-manager-http01-solver"), 1); }, "HTTP-01 solver"],
  ["webhooks only to port 443", (o) => {
    const np = find(o, "NetworkPolicy", "notification-service-delivery");
    np.spec.egress = [{ ports: [{ protocol: "TCP", port: 443 }] }];
  }, "any port"],
  ["webhooks to private ranges", (o) => {
    const np = find(o, "NetworkPolicy", "notification-service-delivery");
    const ip = np.spec.egress.flatMap((r) => r.to ?? []).find((t) => t.ipBlock?.cidr === "0.0.0.0/0").ipBlock;
    ip.except = ip.except.filter((c) => c !== "10.0.0.0/8");
  }, "must except the private ranges 10.0.0.0/8"],
  ["pool size unset", (o) => {
    const c = main(o, "task-service");
    c.env = c.env.filter((e) => e.name !== "DOCKET_DATABASE_POOL_SIZE");
  }, "env DOCKET_DATABASE_POOL_SIZE must be set"],
  ["hash workers beyond the CPU limit", (o) => { main(o, "auth-service").env.find((e) => e.name === "DOCKET_AUTH_HASH_WORKERS").value = "32"; }, "DOCKET_AUTH_HASH_WORKERS 32 is more than"],
  ["connection budget exceeded", (o) => { find(o, "HorizontalPodAutoscaler", "user-service-hpa").spec.maxReplicas = 100; }, "exceed its budget"],
  ["shared backup prefix", (o) => { o.find((x) => x.kind === "ConfigMap" && /^postgres-backup-config/.test(x.metadata.name)).data.BACKUP_PREFIX = "postgres/"; }, "must end in \"/production/\""],
  ["gateway trusting any peer", (o) => {
    const cm = o.find((x) => x.kind === "ConfigMap" && /^api-gateway-config/.test(x.metadata.name));
    cm.data["config.yaml"] = cm.data["config.yaml"].replace(/trusted_proxies:.*\n/, "trust_forwarded_for: true\n");
  }, "never trust_forwarded_for"],
  ["unknown pull secret", (o) => { dep(o, "user-service").spec.template.spec.imagePullSecrets = [{ name: "ghcr" }]; }, "imagePullSecrets names ghcr"],
  ["no default deny", (o) => { o.splice(o.findIndex((x) => x.kind === "NetworkPolicy" && x.metadata.name === "default-deny"), 1); }, "no default-deny NetworkPolicy"],
];

let failed = 0;
const intact = await problemsOf(structuredClone(rendered));
if (intact.length) {
  console.error(`selftest: the intact render is not clean:\n  ${intact.join("\n  ")}`);
  failed++;
}
for (const [name, mutate, expected] of cases) {
  const objs = structuredClone(rendered);
  mutate(objs);
  const p = await problemsOf(objs);
  if (!p.some((x) => x.includes(expected))) {
    console.error(`selftest: NOT CAUGHT: ${name} (expected a problem containing "${expected}"; got: ${p.join(" | ") || "none"})`);
    failed++;
  }
}
// the Secret template: a real value must be refused
{
  const objs = structuredClone(secrets);
  find(objs, "Secret", "jwt-secret").stringData.secret = "s3cr3t-value";
  const p = await problemsOf(objs, { policy: false, secretTemplate: true });
  if (!p.some((x) => x.includes("not a ${PLACEHOLDER}"))) {
    console.error("selftest: NOT CAUGHT: a real value in the Secret template");
    failed++;
  }
  const clean = await problemsOf(structuredClone(secrets), { policy: false, secretTemplate: true });
  if (clean.length) {
    console.error(`selftest: the Secret template is not clean: ${clean.join(" | ")}`);
    failed++;
  }
}
const total = cases.length + 3;
if (failed) {
  console.error(`selftest: ${failed} of ${total} checks failed`);
  process.exit(1);
}
console.log(`selftest: ${total} checks passed (each of ${cases.length + 1} broken copies caught, intact copies clean)`);
