// Docket's rules for one rendered environment (kubectl kustomize deploy/k8s/overlays/<env>),
// on top of the schema check: what deploy/k8s/base promises must survive every overlay.
// checkDocketPolicy(objects) returns a list of problems ("Kind name: message").

export const SERVICES = {
  "api-gateway": { command: "gateway", port: 3000, database: false },
  "auth-service": { command: "auth", port: 3001, database: true },
  "user-service": { command: "users", port: 3002, database: true },
  "task-service": { command: "tasks", port: 3003, database: true },
  "notification-service": { command: "notifications", port: 3004, database: true },
};

// Secrets the manifests may reference: exactly those of deploy/k8s/secrets/secrets.template.yaml.
export const SECRET_KEYS = {
  "database-secret": ["url"],
  "redis-secret": ["url"],
  "jwt-secret": ["secret"],
  "s3-secret": ["access_key_id", "secret_access_key"],
  "smtp-secret": ["url"],
  "backup-s3-secret": ["access_key_id", "secret_access_key"],
  "tls-ca": ["ca.pem"],
  "registry-pull-secret": [".dockerconfigjson"],
};

// Threads and pools every Docket container sets (deploy/k8s/overlays/<env>/sizing.yaml).
const SIZING_ENV = ["DOCKET_SERVER_THREADS", "DOCKET_DATABASE_POOL_SIZE", "DOCKET_REDIS_POOL_SIZE", "DOCKET_AUTH_HASH_WORKERS"];
const ARGON2_DEFAULT_KIB = 19456;

// Webhooks may go to any port of a public address; these ranges must stay excluded.
const PRIVATE_V4 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8", "100.64.0.0/10"];

// An image reference that names its registry: the first path component is a host
// (has a dot or a port, or is localhost), not a Docker Hub namespace.
export function imageRegistry(image) {
  const first = String(image ?? "").split("/")[0];
  return String(image ?? "").includes("/") && (/[.:]/.test(first) || first === "localhost") ? first : null;
}

const SEED_HPA_BEHAVIOR = {
  scaleDown: { stabilizationWindowSeconds: 300, policies: [{ type: "Percent", value: 50, periodSeconds: 60 }] },
  scaleUp: {
    stabilizationWindowSeconds: 60,
    policies: [
      { type: "Percent", value: 100, periodSeconds: 60 },
      { type: "Pods", value: 2, periodSeconds: 60 },
    ],
  },
};

// Kubernetes quantities → numbers (cores or bytes).
export function quantity(q) {
  if (typeof q === "number") return q;
  const m = /^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(String(q));
  if (!m) return NaN;
  const f = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };
  return parseFloat(m[1]) * (m[2] ? f[m[2]] : 1);
}

// deep equality, whatever the key order (kustomize sorts keys)
const canonical = (v) =>
  Array.isArray(v) ? v.map(canonical)
  : v && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical(v[k])]))
  : v;
const same = (a, b) => JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
const matches = (selector, labels) =>
  !!selector && Object.entries(selector).every(([k, v]) => (labels ?? {})[k] === v);

export function checkDocketPolicy(objects) {
  const out = [];
  const byKind = (k) => objects.filter((o) => o.kind === k);
  const named = (k, n) => objects.find((o) => o.kind === k && o.metadata?.name === n);
  const say = (o, msg) => out.push(`${o.kind} ${o.metadata?.name}: ${msg}`);

  // one namespace, declared, and no Secret in the render
  const namespaces = byKind("Namespace");
  if (namespaces.length !== 1) out.push(`expected exactly one Namespace, found ${namespaces.length}`);
  const ns = namespaces[0]?.metadata?.name;
  for (const o of objects) {
    if (o.kind === "Namespace") continue;
    if (o.metadata?.namespace !== ns) say(o, `namespace is ${o.metadata?.namespace}, not ${ns}`);
    if (o.kind === "Secret") say(o, "Secrets never go into the manifests (deploy/k8s/secrets/secrets.template.yaml)");
  }
  if (!objects.some((o) => o.kind === "NetworkPolicy" && same(o.spec?.podSelector, {}) && !o.spec?.ingress && !o.spec?.egress
      && same([...(o.spec?.policyTypes ?? [])].sort(), ["Egress", "Ingress"]))) {
    out.push("no default-deny NetworkPolicy (podSelector {}, policyTypes Ingress+Egress, no rules)");
  }

  const configMaps = new Set(byKind("ConfigMap").map((o) => o.metadata.name));

  // every pod template: security, resources, references
  const podOwners = objects.filter((o) => ["Deployment", "Job"].includes(o.kind) || o.kind === "CronJob");
  for (const o of podOwners) {
    const tmpl = o.kind === "CronJob" ? o.spec?.jobTemplate?.spec?.template : o.spec?.template;
    const pod = tmpl?.spec ?? {};
    const psc = pod.securityContext ?? {};
    if (psc.runAsNonRoot !== true) say(o, "pod securityContext.runAsNonRoot must be true");
    if (!(Number.isInteger(psc.runAsUser) && psc.runAsUser > 0)) say(o, "pod securityContext.runAsUser must be a non-zero uid");
    if (pod.automountServiceAccountToken !== false) say(o, "automountServiceAccountToken must be false (Docket never calls the API server)");
    for (const ps of pod.imagePullSecrets ?? []) {
      if (!SECRET_KEYS[ps.name]) say(o, `imagePullSecrets names ${ps.name}, which secrets.template.yaml does not define`);
    }
    for (const v of pod.volumes ?? []) {
      if (v.secret && !SECRET_KEYS[v.secret.secretName]) say(o, `volume ${v.name}: Secret ${v.secret.secretName} is not in secrets.template.yaml`);
    }
    const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
    for (const v of pod.volumes ?? []) {
      if (v.configMap && !configMaps.has(v.configMap.name)) say(o, `volume ${v.name}: ConfigMap ${v.configMap.name} is not in the render`);
    }
    for (const c of [...(pod.initContainers ?? []), ...(pod.containers ?? [])]) {
      if (!imageRegistry(c.image)) say(o, `container ${c.name}: image ${c.image} names no registry (it would be pulled from Docker Hub)`);
      const sc = c.securityContext ?? {};
      if (sc.readOnlyRootFilesystem !== true) say(o, `container ${c.name}: readOnlyRootFilesystem must be true`);
      if (sc.allowPrivilegeEscalation !== false) say(o, `container ${c.name}: allowPrivilegeEscalation must be false`);
      if (!(sc.capabilities?.drop ?? []).includes("ALL")) say(o, `container ${c.name}: capabilities must drop ALL`);
      if (sc.privileged) say(o, `container ${c.name}: privileged`);
      for (const kind of ["requests", "limits"]) {
        for (const r of ["cpu", "memory"]) {
          const q = c.resources?.[kind]?.[r];
          if (q === undefined) say(o, `container ${c.name}: resources.${kind}.${r} missing`);
          else if (Number.isNaN(quantity(q))) say(o, `container ${c.name}: resources.${kind}.${r} "${q}" is not a quantity`);
        }
      }
      for (const r of ["cpu", "memory"]) {
        const req = quantity(c.resources?.requests?.[r]);
        const lim = quantity(c.resources?.limits?.[r]);
        if (req > lim) say(o, `container ${c.name}: ${r} request ${c.resources.requests[r]} above its limit ${c.resources.limits[r]}`);
      }
      for (const e of c.env ?? []) {
        const ref = e.valueFrom?.secretKeyRef;
        if (ref && !(SECRET_KEYS[ref.name] ?? []).includes(ref.key)) {
          say(o, `container ${c.name}: env ${e.name} reads ${ref.name}/${ref.key}, which secrets.template.yaml does not define`);
        }
        if (typeof e.value === "string" && (/:\/\/[^/@\s]*:[^/@\s]+@/.test(e.value) || /SECRET|PASSWORD|TOKEN|ACCESS_KEY/.test(e.name))) {
          say(o, `container ${c.name}: env ${e.name} has a literal value that looks like a credential; use a secretKeyRef`);
        }
        const cmRef = e.valueFrom?.configMapKeyRef;
        if (cmRef && !configMaps.has(cmRef.name)) say(o, `container ${c.name}: env ${e.name} reads missing ConfigMap ${cmRef.name}`);
      }
      for (const ef of c.envFrom ?? []) {
        if (ef.configMapRef && !configMaps.has(ef.configMapRef.name)) say(o, `container ${c.name}: envFrom missing ConfigMap ${ef.configMapRef.name}`);
        if (ef.secretRef && !SECRET_KEYS[ef.secretRef.name]) say(o, `container ${c.name}: envFrom unknown Secret ${ef.secretRef.name}`);
      }
      for (const m of c.volumeMounts ?? []) {
        if (!volumes.has(m.name)) say(o, `container ${c.name}: mounts undefined volume ${m.name}`);
      }
    }
  }

  // the five services
  for (const [name, svc] of Object.entries(SERVICES)) {
    const d = named("Deployment", name);
    if (!d) {
      out.push(`Deployment ${name}: missing`);
      continue;
    }
    const spec = d.spec ?? {};
    const pod = spec.template?.spec ?? {};
    const podLabels = spec.template?.metadata?.labels ?? {};
    if (spec.replicas !== undefined) say(d, "sets replicas: the HorizontalPodAutoscaler owns the count (set minReplicas instead)");
    const hpaOf = byKind("HorizontalPodAutoscaler").find((h) => h.spec?.scaleTargetRef?.name === name);
    const single = hpaOf?.spec?.minReplicas === 1;
    const wantUnavailable = single ? 0 : 1;
    if (!same(spec.strategy, { type: "RollingUpdate", rollingUpdate: { maxUnavailable: wantUnavailable, maxSurge: 1 } })) {
      say(d, single
        ? "strategy must be RollingUpdate with maxUnavailable 0 and maxSurge 1: with one replica, maxUnavailable 1 takes the only pod down for every rollout"
        : "strategy must be RollingUpdate with maxUnavailable 1 and maxSurge 1 (the seed's)");
    }
    if (!matches(spec.selector?.matchLabels, podLabels)) say(d, "selector does not match the pod template's labels");
    if (pod.serviceAccountName !== name || !named("ServiceAccount", name)) say(d, `serviceAccountName must be ${name}, a ServiceAccount of the render`);
    const c = (pod.containers ?? []).find((x) => x.name === name);
    if (!c) {
      say(d, `no container named ${name}`);
      continue;
    }
    if (pod.containers.length !== 1) say(d, "one container per pod");
    const img = /^(?:.+\/)?docket\/([a-z-]+)(?::([\w.-]+))?(@sha256:[0-9a-f]{64})?$/.exec(c.image ?? "");
    if (!img || img[1] !== name) say(d, `image ${c.image} is not docket/${name} (any registry prefix)`);
    else if (!img[3] && (!img[2] || img[2] === "latest")) say(d, `image ${c.image} needs a tag other than latest, or a digest`);
    if (!same(c.args, [svc.command])) say(d, `args must be ["${svc.command}"]`);
    const port = (c.ports ?? []).find((p) => p.name === "http");
    if (port?.containerPort !== svc.port) say(d, `container port "http" must be ${svc.port}`);
    const ann = spec.template?.metadata?.annotations ?? {};
    if (ann["prometheus.io/scrape"] !== "true" || ann["prometheus.io/port"] !== String(svc.port) || ann["prometheus.io/path"] !== "/metrics") {
      say(d, `pod annotations must be prometheus.io/scrape "true", port "${svc.port}", path /metrics`);
    }
    const probe = (p, path) => p?.httpGet?.path === path && (p.httpGet.port === "http" || p.httpGet.port === svc.port);
    if (!probe(c.livenessProbe, "/health")) say(d, "livenessProbe must GET /health on the http port");
    if (!probe(c.readinessProbe, "/ready")) say(d, "readinessProbe must GET /ready on the http port");
    if (!probe(c.startupProbe, "/health")) say(d, "startupProbe must GET /health on the http port");
    const envRefs = Object.fromEntries((c.env ?? []).filter((e) => e.valueFrom?.secretKeyRef).map((e) => [e.name, e.valueFrom.secretKeyRef]));
    const wantEnv = { REDIS_URL: ["redis-secret", "url"], JWT_SECRET: ["jwt-secret", "secret"] };
    if (svc.database) wantEnv.DATABASE_URL = ["database-secret", "url"];
    for (const [v, [s, k]] of Object.entries(wantEnv)) {
      if (envRefs[v]?.name !== s || envRefs[v]?.key !== k || envRefs[v]?.optional) say(d, `env ${v} must come from secretKeyRef ${s}/${k}`);
    }
    if (!svc.database && envRefs.DATABASE_URL) say(d, "the gateway has no database: no DATABASE_URL");
    // threads and pools: set, and within the container's CPU and memory
    const envVal = Object.fromEntries((c.env ?? []).filter((e) => typeof e.value === "string").map((e) => [e.name, e.value]));
    const cpus = Math.max(1, Math.ceil(quantity(c.resources?.limits?.cpu ?? "1")));
    const need = ["DOCKET_SERVER_THREADS", "DOCKET_REDIS_POOL_SIZE", ...(svc.database ? ["DOCKET_DATABASE_POOL_SIZE"] : []),
      ...(svc.command === "auth" ? ["DOCKET_AUTH_HASH_WORKERS"] : [])];
    for (const v of need) {
      if (!/^[1-9][0-9]*$/.test(envVal[v] ?? "")) say(d, `env ${v} must be set to a positive number (threads and pools per environment: overlays/<env>/sizing.yaml)`);
    }
    if (Number(envVal.DOCKET_SERVER_THREADS) > 8 * cpus) say(d, `DOCKET_SERVER_THREADS ${envVal.DOCKET_SERVER_THREADS} is more than 8 per CPU of its limit (${cpus})`);
    if (svc.command === "auth") {
      const workers = Number(envVal.DOCKET_AUTH_HASH_WORKERS);
      if (workers > cpus) say(d, `DOCKET_AUTH_HASH_WORKERS ${workers} is more than the ${cpus} CPU(s) of its limit`);
      const kib = Number(envVal.DOCKET_AUTH_ARGON2_MEMORY_KIB ?? ARGON2_DEFAULT_KIB);
      const mem = quantity(c.resources?.limits?.memory);
      if (workers * kib * 1024 > mem / 2) say(d, `${workers} hash workers × ${kib} KiB is more than half its memory limit`);
    }
    const mount = (p) => (c.volumeMounts ?? []).find((m) => m.mountPath === p);
    const vol = (m) => (pod.volumes ?? []).find((v) => v.name === m?.name);
    if (!vol(mount("/app/config"))?.configMap) say(d, "/app/config must be a ConfigMap volume");
    if (!vol(mount("/tmp"))?.emptyDir) say(d, "/tmp must be an emptyDir volume");
    if (svc.database) {
      const init = (pod.initContainers ?? []).find((x) => x.name === "migrate");
      if (!init || !same(init.args, ["migrate"]) || init.image !== c.image) say(d, "needs the init container migrate (args [migrate], same image)");
    }

    const s = named("Service", name);
    if (!s) say(d, `no Service ${name}`);
    else {
      if (!matches(s.spec?.selector, podLabels)) say(s, "selector does not match the Deployment's pods");
      const sp = (s.spec?.ports ?? [])[0];
      if (sp?.port !== 80 || !(sp.targetPort === "http" || sp.targetPort === svc.port)) say(s, "must expose port 80 → http");
    }
    const pdb = byKind("PodDisruptionBudget").find((p) => matches(p.spec?.selector?.matchLabels, podLabels));
    if (!pdb) say(d, "no PodDisruptionBudget selects its pods");

    const hpa = byKind("HorizontalPodAutoscaler").find((h) => h.spec?.scaleTargetRef?.name === name);
    if (!hpa) say(d, "no HorizontalPodAutoscaler targets it");
    else {
      if (hpa.spec.scaleTargetRef.kind !== "Deployment" || hpa.spec.scaleTargetRef.apiVersion !== "apps/v1") say(hpa, "scaleTargetRef must be an apps/v1 Deployment");
      if (!(hpa.spec.minReplicas >= 1 && hpa.spec.maxReplicas >= hpa.spec.minReplicas)) say(hpa, "needs 1 <= minReplicas <= maxReplicas");
      const m = hpa.spec.metrics ?? [];
      const res = (n) => m.find((x) => x.type === "Resource" && x.resource?.name === n)?.resource?.target;
      if (!same(res("cpu"), { type: "Utilization", averageUtilization: 70 })) say(hpa, "CPU target must be 70 % utilisation");
      if (!same(res("memory"), { type: "Utilization", averageUtilization: 80 })) say(hpa, "memory target must be 80 % utilisation");
      const rps = m.find((x) => x.type === "Pods" && x.pods?.metric?.name === "requests_per_second");
      if (!rps || !same(rps.pods.target, { type: "AverageValue", averageValue: "100" })) say(hpa, "needs the Pods metric requests_per_second, AverageValue 100");
      if (!same(hpa.spec.behavior, SEED_HPA_BEHAVIOR)) say(hpa, "behavior must be the seed's scale-up/scale-down policies");
    }
    const vpa = byKind("VerticalPodAutoscaler").find((v) => v.spec?.targetRef?.name === name);
    if (!vpa) say(d, "no VerticalPodAutoscaler targets it");
    else {
      const cp = (vpa.spec.resourcePolicy?.containerPolicies ?? [])[0] ?? {};
      if (cp.containerName !== name) say(vpa, `containerPolicies[0].containerName must be ${name}`);
      if (quantity(cp.minAllowed?.cpu) !== 0.1 || quantity(cp.minAllowed?.memory) !== 128 * 2 ** 20) say(vpa, "minAllowed must be cpu 100m, memory 128Mi");
      if (quantity(cp.maxAllowed?.cpu) !== 1 || quantity(cp.maxAllowed?.memory) !== 2 * 2 ** 30) say(vpa, "maxAllowed must be cpu 1, memory 2Gi");
    }
  }
  for (const h of byKind("HorizontalPodAutoscaler")) {
    if (!named(h.spec?.scaleTargetRef?.kind ?? "Deployment", h.spec?.scaleTargetRef?.name)) say(h, `targets ${h.spec?.scaleTargetRef?.name}, which is not in the render`);
  }
  for (const v of byKind("VerticalPodAutoscaler")) {
    if (!named(v.spec?.targetRef?.kind ?? "Deployment", v.spec?.targetRef?.name)) say(v, `targets ${v.spec?.targetRef?.name}, which is not in the render`);
  }
  for (const p of byKind("PodDisruptionBudget")) {
    if (!byKind("Deployment").some((d) => matches(p.spec?.selector?.matchLabels, d.spec?.template?.metadata?.labels))) say(p, "selects no Deployment's pods");
  }

  // the database connections of the namespace at the HPA maxima, within its budget
  const budget = Number(namespaces[0]?.metadata?.annotations?.["docket.io/database-connection-budget"]);
  if (!(budget > 0)) out.push(`Namespace ${ns}: needs the annotation docket.io/database-connection-budget (database connections it may hold)`);
  else {
    let used = 0;
    const parts = [];
    for (const [name, svc] of Object.entries(SERVICES)) {
      if (!svc.database) continue;
      const d = named("Deployment", name);
      const hpa = byKind("HorizontalPodAutoscaler").find((h) => h.spec?.scaleTargetRef?.name === name);
      const pool = Number((d?.spec?.template?.spec?.containers?.[0]?.env ?? []).find((e) => e.name === "DOCKET_DATABASE_POOL_SIZE")?.value);
      if (hpa && pool > 0) {
        used += hpa.spec.maxReplicas * pool;
        parts.push(`${name} ${hpa.spec.maxReplicas}×${pool}`);
      }
    }
    used += byKind("CronJob").length; // a backup holds one
    if (used > budget) out.push(`Namespace ${ns}: ${used} database connections at the HPA maxima (${parts.join(" + ")} + backups) exceed its budget ${budget}`);
  }

  // backups under a prefix of this environment's own
  for (const cm of byKind("ConfigMap").filter((x) => /^postgres-backup-config/.test(x.metadata?.name))) {
    const prefix = cm.data?.BACKUP_PREFIX ?? "";
    if (!prefix.endsWith(`/${ns}/`)) say(cm, `BACKUP_PREFIX "${prefix}" must end in "/${ns}/": one prefix per environment, or a restore of "latest" can fetch another environment's dump`);
  }

  // the gateway believes forwarded headers only from the proxies' ranges
  const gwConfig = byKind("ConfigMap").find((x) => /^api-gateway-config/.test(x.metadata?.name));
  if (gwConfig) {
    const text = gwConfig.data?.["config.yaml"] ?? "";
    if (/^\s*trust_forwarded_for:\s*true/m.test(text)) say(gwConfig, "the gateway is the public edge: never trust_forwarded_for (it would believe any peer); set server.trusted_proxies");
    if (!/^\s*trusted_proxies:\s*"?[0-9a-fA-F:.]/m.test(text)) say(gwConfig, "server.trusted_proxies must name the ingress controller's ranges, or every client shares one rate-limit bucket");
  }

  // NetworkPolicies: cert-manager's HTTP-01 solver reachable; webhooks to any port of a public address
  const policies = byKind("NetworkPolicy");
  const solver = policies.find((p) => p.spec?.podSelector?.matchLabels?.["acme.cert-manager.io/http01-solver"] === "true");
  if (!solver || !(solver.spec.ingress ?? []).some((r) => (r.ports ?? []).some((pt) => pt.port === 8089)
      && (r.from ?? []).some((f) => f.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"] === "ingress-nginx"))) {
    out.push("no NetworkPolicy lets ingress-nginx reach cert-manager's HTTP-01 solver pods (label acme.cert-manager.io/http01-solver, port 8089): no certificate could be issued");
  }
  const notifEgress = policies.filter((p) => p.spec?.podSelector?.matchLabels?.app === "notification-service" && (p.spec?.policyTypes ?? []).includes("Egress"))
    .flatMap((p) => p.spec.egress ?? []);
  const webhookRule = notifEgress.find((r) => !r.ports && (r.to ?? []).some((t) => t.ipBlock?.cidr === "0.0.0.0/0"));
  if (!webhookRule) out.push("NetworkPolicy: notification-service needs an egress rule to 0.0.0.0/0 on every port (the API accepts webhook URLs with any port)");
  else {
    const except = (webhookRule.to.find((t) => t.ipBlock?.cidr === "0.0.0.0/0").ipBlock.except ?? []);
    const missing = PRIVATE_V4.filter((c) => !except.includes(c));
    if (missing.length) out.push(`NetworkPolicy: the webhook egress rule must except the private ranges ${missing.join(", ")}`);
  }

  // the Ingress: TLS, rate limit, certificate issuer, only the gateway behind it
  const ingresses = byKind("Ingress");
  if (ingresses.length === 0) out.push("no Ingress");
  for (const ing of ingresses) {
    const a = ing.metadata?.annotations ?? {};
    if (!a["nginx.ingress.kubernetes.io/limit-rps"]) say(ing, "needs the nginx.ingress.kubernetes.io/limit-rps annotation");
    if (!a["cert-manager.io/cluster-issuer"]) say(ing, "needs the cert-manager.io/cluster-issuer annotation");
    const tlsHosts = (ing.spec?.tls ?? []).flatMap((t) => t.hosts ?? []);
    for (const r of ing.spec?.rules ?? []) {
      if (!tlsHosts.includes(r.host)) say(ing, `host ${r.host} has no TLS entry`);
      for (const p of r.http?.paths ?? []) {
        const b = p.backend?.service;
        if (b?.name !== "api-gateway") say(ing, `path ${p.path} goes to ${b?.name}: only api-gateway is exposed`);
        else if (!(p.path === "/api" || p.path?.startsWith("/api/"))) say(ing, `path ${p.path} exposes the gateway's ${p.path === "/" ? "/metrics and /ready" : "non-API routes"}: route only /api to api-gateway`);
        const s = named("Service", b?.name);
        if (!s || !(s.spec?.ports ?? []).some((sp) => sp.port === b?.port?.number || sp.name === b?.port?.name)) {
          say(ing, `path ${p.path}: backend ${b?.name}:${b?.port?.number ?? b?.port?.name} is not a Service port of the render`);
        }
      }
    }
  }
  return out;
}
