// Field lists of the custom resources Docket ships that kubernetes-models has no schema for:
// Velero's Schedule and BackupStorageLocation (velero.io/v1, from Velero 1.13's API types);
// the Prometheus Operator's PodMonitor and PrometheusRule (monitoring.coreos.com/v1, from
// prometheus-operator 0.7x's API types: the fields Docket uses and their common siblings).
// A small schema language: "string" | "boolean" | "integer" | "duration" | "cron" |
// "stringMap" | ["string"] (array of) | { fields: {…}, required: [...] } | { enum: [...] }.
// validateCrd(schema, object) returns a list of problems (unknown fields included).

const labelSelector = {
  fields: {
    matchLabels: "stringMap",
    matchExpressions: [
      {
        fields: { key: "string", operator: { enum: ["In", "NotIn", "Exists", "DoesNotExist"] }, values: ["string"] },
        required: ["key", "operator"],
      },
    ],
  },
};

const objectMeta = {
  fields: {
    name: "string",
    namespace: "string",
    labels: "stringMap",
    annotations: "stringMap",
  },
  required: ["name"],
};

const backupSpec = {
  fields: {
    metadata: { fields: { labels: "stringMap" } },
    includedNamespaces: ["string"],
    excludedNamespaces: ["string"],
    includedResources: ["string"],
    excludedResources: ["string"],
    includedClusterScopedResources: ["string"],
    excludedClusterScopedResources: ["string"],
    includedNamespaceScopedResources: ["string"],
    excludedNamespaceScopedResources: ["string"],
    labelSelector,
    orLabelSelectors: [labelSelector],
    snapshotVolumes: "boolean",
    ttl: "duration",
    includeClusterResources: "boolean",
    storageLocation: "string",
    volumeSnapshotLocations: ["string"],
    defaultVolumesToFsBackup: "boolean",
    snapshotMoveData: "boolean",
    datamover: "string",
    orderedResources: "stringMap",
    csiSnapshotTimeout: "duration",
    itemOperationTimeout: "duration",
    resourcePolicy: { fields: { kind: "string", name: "string", apiGroup: "string" } },
  },
};

const relabeling = {
  fields: {
    sourceLabels: ["string"],
    separator: "string",
    targetLabel: "string",
    regex: "string",
    modulus: "integer",
    replacement: "string",
    action: {
      enum: ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap", "LabelMap",
        "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase", "Uppercase",
        "keepequal", "KeepEqual", "dropequal", "DropEqual"],
    },
  },
};

const promRule = {
  fields: {
    record: "string",
    alert: "string",
    expr: "string",
    for: "duration",
    keep_firing_for: "duration",
    labels: "stringMap",
    annotations: "stringMap",
  },
  required: ["expr"],
};

export const crdSchemas = {
  "monitoring.coreos.com/v1/PodMonitor": {
    fields: {
      apiVersion: "string",
      kind: "string",
      metadata: objectMeta,
      spec: {
        fields: {
          jobLabel: "string",
          podTargetLabels: ["string"],
          selector: labelSelector,
          namespaceSelector: { fields: { any: "boolean", matchNames: ["string"] } },
          podMetricsEndpoints: [
            {
              fields: {
                port: "string",
                path: "string",
                scheme: { enum: ["http", "https"] },
                interval: "duration",
                scrapeTimeout: "duration",
                honorLabels: "boolean",
                honorTimestamps: "boolean",
                relabelings: [relabeling],
                metricRelabelings: [relabeling],
              },
            },
          ],
          sampleLimit: "integer",
        },
        required: ["selector", "podMetricsEndpoints"],
      },
    },
    required: ["apiVersion", "kind", "metadata", "spec"],
  },
  "monitoring.coreos.com/v1/PrometheusRule": {
    fields: {
      apiVersion: "string",
      kind: "string",
      metadata: objectMeta,
      spec: {
        fields: {
          groups: [
            {
              fields: { name: "string", interval: "duration", limit: "integer", rules: [promRule] },
              required: ["name", "rules"],
            },
          ],
        },
        required: ["groups"],
      },
    },
    required: ["apiVersion", "kind", "metadata", "spec"],
  },
  "velero.io/v1/Schedule": {
    fields: {
      apiVersion: "string",
      kind: "string",
      metadata: objectMeta,
      spec: {
        fields: {
          schedule: "cron",
          template: backupSpec,
          useOwnerReferencesInBackup: "boolean",
          paused: "boolean",
          skipImmediately: "boolean",
        },
        required: ["schedule", "template"],
      },
    },
    required: ["apiVersion", "kind", "metadata", "spec"],
  },
  "velero.io/v1/BackupStorageLocation": {
    fields: {
      apiVersion: "string",
      kind: "string",
      metadata: objectMeta,
      spec: {
        fields: {
          provider: "string",
          objectStorage: {
            fields: { bucket: "string", prefix: "string", caCert: "string" },
            required: ["bucket"],
          },
          config: "stringMap",
          credential: { fields: { name: "string", key: "string", optional: "boolean" }, required: ["key"] },
          default: "boolean",
          accessMode: { enum: ["ReadWrite", "ReadOnly"] },
          backupSyncPeriod: "duration",
          validationFrequency: "duration",
        },
        required: ["provider", "objectStorage"],
      },
    },
    required: ["apiVersion", "kind", "metadata", "spec"],
  },
};

const cronField = /^(\*|\d+(-\d+)?)(\/\d+)?(,(\*|\d+(-\d+)?)(\/\d+)?)*$/;
const goDuration = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/;

export function validateCrd(schema, value, where = "") {
  const out = [];
  const at = where || "/";
  if (typeof schema === "string") {
    switch (schema) {
      case "string":
        if (typeof value !== "string") out.push(`${at}: must be a string`);
        break;
      case "boolean":
        if (typeof value !== "boolean") out.push(`${at}: must be a boolean`);
        break;
      case "integer":
        if (!Number.isInteger(value)) out.push(`${at}: must be an integer`);
        break;
      case "duration":
        if (typeof value !== "string" || !goDuration.test(value)) out.push(`${at}: must be a duration such as 72h0m0s`);
        break;
      case "cron": {
        const f = typeof value === "string" ? value.trim().split(/\s+/) : [];
        if (!(typeof value === "string" && (/^@(every \S+|daily|hourly|weekly|monthly|yearly)$/.test(value) || (f.length === 5 && f.every((x) => cronField.test(x)))))) {
          out.push(`${at}: must be a 5-field cron expression`);
        }
        break;
      }
      case "stringMap":
        if (value === null || typeof value !== "object" || Array.isArray(value)) out.push(`${at}: must be a mapping`);
        else for (const [k, v] of Object.entries(value)) if (typeof v !== "string") out.push(`${at}/${k}: must be a string`);
        break;
      default:
        throw new Error(`unknown schema type ${schema}`);
    }
    return out;
  }
  if (Array.isArray(schema)) {
    if (!Array.isArray(value)) return [`${at}: must be a list`];
    value.forEach((x, i) => out.push(...validateCrd(schema[0], x, `${where}/${i}`)));
    return out;
  }
  if (schema.enum) {
    if (!schema.enum.includes(value)) out.push(`${at}: must be one of ${schema.enum.join(", ")}`);
    return out;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) return [`${at}: must be a mapping`];
  for (const r of schema.required ?? []) if (value[r] === undefined) out.push(`${where}/${r}: required`);
  for (const [k, v] of Object.entries(value)) {
    if (!(k in schema.fields)) out.push(`${where}/${k}: unknown field`);
    else out.push(...validateCrd(schema.fields[k], v, `${where}/${k}`));
  }
  return out;
}
