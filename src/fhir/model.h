/*
 * model.h — the FHIR R4 model as C tables: resource and data types, their
 * elements (path, cardinality, types), search parameters (with a compiled
 * path program derived from each parameter's FHIRPath expression), and the
 * Patient compartment. The tables live in model_gen.c, generated from the
 * official R4 definitions by tools/gen_fhir_model.py (see that script); do not
 * edit model_gen.c by hand. model.c holds the lookups.
 *
 * Path programs (fhir_search_param.path). The generator turns each FHIRPath
 * expression into branches separated by '|'. A branch is a list of steps
 * separated by '.', starting *below* the resource type ("Observation.code"
 * becomes "code"). A step is an element name followed by optional suffixes:
 *   name[x]        the element is a choice type: match any JSON key name+Type
 *   name[x]:Type   as(Type): only the key name+Type (e.g. value[x]:Quantity
 *                  matches "valueQuantity")
 *   name[N]        only the N-th item of the array
 *   name?f=v       where(f='v'): keep items whose child f equals "v"
 *   name@Type      where(resolve() is Type): keep references to Type
 * A branch ending in '!' means "exists() and != false" (a boolean token:
 * "true" when the element is present and not false, else "false").
 * Expressions the generator cannot compile are left out, and listed in the
 * generator's output.
 */
#ifndef CONCORD_FHIR_MODEL_H
#define CONCORD_FHIR_MODEL_H

#include <stddef.h>

typedef enum sp_type {
    SP_NUMBER,
    SP_DATE,
    SP_STRING,
    SP_TOKEN,
    SP_REFERENCE,
    SP_COMPOSITE,
    SP_QUANTITY,
    SP_URI,
    SP_SPECIAL
} sp_type;

typedef enum fhir_kind { FHIR_KIND_PRIMITIVE, FHIR_KIND_COMPLEX, FHIR_KIND_RESOURCE } fhir_kind;

/* One element of a type's snapshot. `path` is the full dotted path from the
 * type root ("Observation.component.value[x]"). `types` lists allowed type
 * codes separated by '|' ("Quantity|CodeableConcept|string"); backbone
 * elements have "BackboneElement" (or "Element"); an element defined by
 * contentReference has types == NULL and `content_ref` set to the referenced
 * path ("Questionnaire.item"). */
typedef struct fhir_element {
    const char *path;
    const char *types;
    const char *content_ref;
    unsigned short min;
    unsigned char many; /* 1 when max is "*" or > 1 */
    unsigned char summary; /* 1 when isSummary (for _summary=true) */
} fhir_element;

/* A type (resource, complex datatype or primitive). Its elements are
 * fhir_elements[first .. first+count), sorted by path. */
typedef struct fhir_type {
    const char *name;
    const char *base;      /* "DomainResource", "Element", ... or NULL */
    fhir_kind kind;
    unsigned char abstract_;
    int first;
    int count;
} fhir_type;

/* A search parameter for one resource type. Parameters whose base is
 * Resource/DomainResource appear once with resource "Resource"/"DomainResource". */
typedef struct fhir_search_param {
    const char *resource;  /* "Observation", "Resource", "DomainResource" */
    const char *code;      /* "patient", "_lastUpdated" */
    sp_type type;
    const char *path;      /* compiled path program, NULL if none/unsupported */
    const char *targets;   /* reference targets "Patient|Group", or NULL */
    const char *expression;/* the original FHIRPath expression (for the record) */
} fhir_search_param;

/* Patient compartment membership: for a resource type, the search parameter
 * codes (separated by '|') that make a resource part of a patient's
 * compartment, in the order of CompartmentDefinition/patient. */
typedef struct fhir_compartment {
    const char *resource;
    const char *params;
} fhir_compartment;

/* Generated tables (model_gen.c). Sorted: types by name; elements by path
 * within each type; search params by (resource, code); compartment by resource. */
extern const fhir_type fhir_types[];
extern const size_t fhir_n_types;
extern const fhir_element fhir_elements[];
extern const size_t fhir_n_elements;
extern const fhir_search_param fhir_search_params[];
extern const size_t fhir_n_search_params;
extern const fhir_compartment fhir_compartments[];
extern const size_t fhir_n_compartments;
extern const char fhir_model_version[]; /* "4.0.1" and the source package version */

/* Lookups (model.c). All return borrowed pointers into static tables or NULL. */
const fhir_type *fhir_type_find(const char *name);
const fhir_type *fhir_type_findn(const char *name, size_t n);
/* Resource types only (kind == RESOURCE and not abstract). */
const fhir_type *fhir_resource_type(const char *name);
/* Element of a type by full path ("Patient.name"); handles only exact paths. */
const fhir_element *fhir_element_find(const char *path);
const fhir_element *fhir_element_findn(const char *path, size_t n);
/* Search parameter `code` for resource type `rtype`, falling back to those
 * defined on DomainResource and Resource. */
const fhir_search_param *fhir_search_param_find(const char *rtype, const char *code);
/* Iterate the parameters specific to `rtype`: *count set, returns first. */
const fhir_search_param *fhir_search_params_of(const char *rtype, size_t *count);
const fhir_compartment *fhir_compartment_find(const char *rtype);
const char *sp_type_name(sp_type t);

#endif
