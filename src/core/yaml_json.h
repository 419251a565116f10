/* yaml_json.h — a YAML document as a JSON value (for serving api/openapi.yaml as JSON).
 * Plain scalars are typed by the YAML 1.2 core schema (null, booleans, integers, floats; the rest
 * are strings); quoted and block scalars stay strings; mapping keys are strings. Depth and node
 * count are capped (an alias bomb is an error, not a billion nodes). The caller owns the result
 * (json_decref). Thread-safe. */
#ifndef DK_YAML_JSON_H
#define DK_YAML_JSON_H

#include <jansson.h>
#include <stddef.h>

/* NULL on a parse error or a document over the caps; err gets a one-line reason. */
json_t *dk_yaml_to_json(const char *text, size_t len, char *err, size_t errcap);

#endif
