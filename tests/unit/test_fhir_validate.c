/*
 * test_fhir_validate.c — the structural FHIR validator (validate.c).
 *
 * Every official R4 example in $CONCORD_REFERENCE_DIR/fhir-r4/examples must
 * validate (one is genuinely invalid; see test_reference_examples). Negative
 * cases each assert the status, the issue type and the exact `where` path.
 * JSON in the cases is written with single quotes for readability; J()
 * turns them into double quotes (no case needs an apostrophe).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir/validate.h"

#ifndef CONCORD_REFERENCE_DIR
#define CONCORD_REFERENCE_DIR "../shared/reference"
#endif

static json_t *J(const char *text) {
    char buf[4096];
    json_error_t je;
    json_t *j;
    size_t n = strlen(text);
    assert_true(n < sizeof buf);
    for (size_t i = 0; i <= n; i++)
        buf[i] = text[i] == '\'' ? '"' : text[i];
    j = json_loads(buf, 0, &je);
    if (!j) fail_msg("bad test JSON: %s: %s", je.text, buf);
    return j;
}

static void expect_ok_(const char *text, const char *file, int line) {
    json_t *j = J(text);
    err e;
    status rc = fhir_validate(j, NULL, &e);
    if (rc != ST_OK)
        fail_msg("%s:%d: expected valid, got %s [%s] at %s: %s", file, line, status_name(rc), e.issue,
                 e.where, e.msg);
    json_decref(j);
}

static void expect_err_(const char *text, status want, const char *issue, const char *where, const char *file,
                        int line) {
    json_t *j = J(text);
    err e;
    status rc;
    err_clear(&e);
    rc = fhir_validate(j, NULL, &e);
    if (rc != want || strcmp(e.where, where) != 0 || strcmp(e.issue ? e.issue : "", issue) != 0)
        fail_msg("%s:%d: expected %s [%s] at %s, got %s [%s] at %s: %s", file, line, status_name(want), issue,
                 where, status_name(rc), e.issue ? e.issue : "-", e.where, e.msg);
    assert_int_equal(e.code, want);
    assert_true(e.msg[0] != '\0');
    json_decref(j);
}

#define expect_ok(t)                    expect_ok_((t), __FILE__, __LINE__)
#define expect_err(t, st, issue, where) expect_err_((t), (st), (issue), (where), __FILE__, __LINE__)

/* ---- the official examples ---------------------------------------------- */

static void test_reference_examples(void **state) {
    const char *dir = CONCORD_REFERENCE_DIR "/fhir-r4/examples";
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    (void)state;
    if (!d) fail_msg("cannot open %s", dir);
    while ((de = readdir(d)) != NULL) {
        char path[1024];
        size_t len = strlen(de->d_name);
        json_error_t je;
        json_t *j;
        err e;
        status rc;
        if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        j = json_load_file(path, 0, &je);
        if (!j) fail_msg("%s: %s", path, je.text);
        rc = fhir_validate(j, NULL, &e);
        if (strcmp(de->d_name, "bundle-questionnaire.json") == 0) {
            /* Genuinely invalid: this generated Questionnaire (it describes
             * Bundle) has display items without a linkId, e.g. item[0].item[0]
             * {"extension": [...], "text": "A container for...", "type":
             * "display"}; Questionnaire.item.linkId is 1..1 in R4. */
            assert_int_equal(rc, ST_UNPROCESSABLE);
            assert_string_equal(e.issue, "required");
            assert_string_equal(e.where, "Questionnaire.item[0].item[0].linkId");
        } else if (rc != ST_OK) {
            fail_msg("%s: %s [%s] at %s: %s", de->d_name, status_name(rc), e.issue, e.where, e.msg);
        }
        /* expected type given and matching */
        if (rc == ST_OK) {
            const char *rt = json_string_value(json_object_get(j, "resourceType"));
            assert_int_equal(fhir_validate(j, rt, NULL), ST_OK);
        }
        json_decref(j);
        n++;
    }
    closedir(d);
    assert_true(n >= 70);
}

/* ---- valid shapes ---------------------------------------------------------- */

static void test_valid_shapes(void **state) {
    (void)state;
    expect_ok("{'resourceType':'Patient'}");
    expect_ok("{'resourceType':'Patient','id':'pat-1.A','active':true,"
              "'name':[{'family':'Smith','given':['Jo','Ann']}],"
              "'birthDate':'1980-02-29','deceasedDateTime':'2020-05-01T10:15:30.25+01:00',"
              "'multipleBirthInteger':2}");
    /* primitive extensions: single and parallel arrays with nulls */
    expect_ok("{'resourceType':'Patient','_birthDate':{'extension':[{'url':'http://x',"
              "'valueCode':'unknown'}]}}");
    expect_ok("{'resourceType':'Patient','name':[{'given':['A',null],"
              "'_given':[null,{'id':'g2','extension':[{'url':'http://x','valueString':'B'}]}]}]}");
    expect_ok("{'resourceType':'Patient','name':[{'given':['A','B'],'_given':[{'id':'x'},null]}]}");
    /* required element supplied only through its extension */
    expect_ok("{'resourceType':'Observation','_status':{'extension':[{'url':'http://x',"
              "'valueCode':'unknown'}]},'code':{'text':'x'}}");
    /* choice types, backbone elements, content references */
    expect_ok("{'resourceType':'Observation','status':'final','code':{'text':'bp'},"
              "'valueQuantity':{'value':120,'unit':'mmHg'},"
              "'component':[{'code':{'text':'sys'},'valueCodeableConcept':{'text':'x'}},"
              "{'code':{'text':'t'},'valueDateTime':'2021','valueString':'also'}],"
              "'effectivePeriod':{'start':'2020-01-01'}}");
    expect_ok("{'resourceType':'Questionnaire','status':'draft','item':[{'linkId':'1','type':'group',"
              "'item':[{'linkId':'1.1','type':'boolean','enableWhen':[{'question':'1',"
              "'operator':'exists','answerBoolean':true}]}]}]}");
    /* nested resources */
    expect_ok("{'resourceType':'Bundle','type':'collection','entry':[{'fullUrl':"
              "'urn:uuid:0a1b2c3d-0000-4000-8000-00000000abcd','resource':{'resourceType':'Patient'}}]}");
    expect_ok("{'resourceType':'Parameters','parameter':[{'name':'p','resource':"
              "{'resourceType':'Organization','name':'X'}},{'name':'q','valueInteger':-3}]}");
    expect_ok("{'resourceType':'Patient','contained':[{'resourceType':'Organization','id':'o1'}],"
              "'managingOrganization':{'reference':'#o1'}}");
    /* extensions in extensions, modifier extensions on backbone elements */
    expect_ok("{'resourceType':'Patient','extension':[{'url':'http://a','extension':[{'url':'b',"
              "'valueBoolean':false}]}],'contact':[{'modifierExtension':[{'url':'http://m',"
              "'valueString':'x'}],'name':{'text':'n'}}]}");
    expect_ok("{'resourceType':'Patient','text':{'status':'generated','div':'<div xmlns=\\'x\\'/>'}}");
    expect_ok("{'resourceType':'Patient','meta':{'lastUpdated':'2020-01-01T00:00:00Z',"
              "'versionId':'1','profile':['http://p|1.0']}}");
    expect_ok("{'resourceType':'Appointment','status':'booked','participant':[{'status':'accepted'}],"
              "'minutesDuration':1,'priority':0}");
    expect_ok("{'resourceType':'Observation','status':'final','code':{'text':'x'},"
              "'valueTime':'23:59:60.5'}");
    expect_ok("{'resourceType':'Observation','status':'final','code':{'text':'x'},"
              "'valueQuantity':{'value':1.5e3}}");
}

/* ---- negative cases ------------------------------------------------------- */

static void test_unknown_elements(void **state) {
    (void)state;
    expect_err("{'resourceType':'Patient','foo':1}", ST_INVALID, "structure", "Patient.foo");
    expect_err("{'resourceType':'Patient','name':[{'family':'X','middle':'Y'}]}", ST_INVALID, "structure",
               "Patient.name[0].middle");
    /* resourceType belongs to resource roots only */
    expect_err("{'resourceType':'Patient','name':[{'resourceType':'HumanName'}]}", ST_INVALID, "structure",
               "Patient.name[0].resourceType");
    /* a choice element is named by its type, never literally */
    expect_err("{'resourceType':'Observation','status':'final','code':{'text':'x'},"
               "'value[x]':'1'}",
               ST_INVALID, "structure", "Observation.value[x]");
    /* a choice type the element does not allow */
    expect_err("{'resourceType':'Observation','status':'final','code':{'text':'x'},"
               "'valueFoo':'1'}",
               ST_INVALID, "structure", "Observation.valueFoo");
    expect_err("{'resourceType':'Observation','status':'final','code':{'text':'x'},"
               "'valueAddress':{'city':'x'}}",
               ST_INVALID, "structure", "Observation.valueAddress");
    /* lower-case type suffix is not the JSON name */
    expect_err("{'resourceType':'Observation','status':'final','code':{'text':'x'},"
               "'valuestring':'x'}",
               ST_INVALID, "structure", "Observation.valuestring");
    /* _x only for primitive elements */
    expect_err("{'resourceType':'Patient','_name':{'id':'x'}}", ST_INVALID, "structure", "Patient._name");
    expect_err("{'resourceType':'Patient','_foo':{'id':'x'}}", ST_INVALID, "structure", "Patient._foo");
    /* inside a primitive extension object only Element's id and extension */
    expect_err("{'resourceType':'Patient','_gender':{'value':'x'}}", ST_INVALID, "structure",
               "Patient._gender.value");
}

static void test_wrong_json_kind(void **state) {
    (void)state;
    expect_err("{'resourceType':'Patient','active':'yes'}", ST_INVALID, "structure", "Patient.active");
    expect_err("{'resourceType':'Patient','birthDate':19800101}", ST_INVALID, "structure",
               "Patient.birthDate");
    expect_err("{'resourceType':'Patient','name':['Jo Smith']}", ST_INVALID, "structure", "Patient.name[0]");
    expect_err("{'resourceType':'Patient','name':[{'given':[1]}]}", ST_INVALID, "structure",
               "Patient.name[0].given[0]");
    expect_err("{'resourceType':'Patient','multipleBirthInteger':'2'}", ST_INVALID, "structure",
               "Patient.multipleBirthInteger");
    expect_err("{'resourceType':'Observation','status':'final','code':{'text':'x'},"
               "'valueQuantity':{'value':'1.5'}}",
               ST_INVALID, "structure", "Observation.valueQuantity.value");
    expect_err("{'resourceType':'Patient','active':null}", ST_INVALID, "structure", "Patient.active");
    expect_err("{'resourceType':'Patient','name':[{'given':[null]}]}", ST_INVALID, "structure",
               "Patient.name[0].given[0]");
    expect_err("{'resourceType':'Patient','_gender':'x'}", ST_INVALID, "structure", "Patient._gender");
    /* a null in both parallel arrays at the same position */
    expect_ok("{'resourceType':'Patient','name':[{'given':['a'],'_given':[null]}]}");
    expect_err("{'resourceType':'Patient','name':[{'_given':[null],'given':[null]}]}", ST_INVALID,
               "structure", "Patient.name[0]._given[0]");
    expect_err("{'resourceType':'Patient','name':[{'given':[null],'_given':[null]}]}", ST_INVALID,
               "structure", "Patient.name[0].given[0]");
    expect_err("{'resourceType':'Patient','contained':['x']}", ST_INVALID, "structure",
               "Patient.contained[0]");
}

static void test_cardinality(void **state) {
    (void)state;
    /* array where a single value belongs */
    expect_err("{'resourceType':'Patient','gender':['male']}", ST_UNPROCESSABLE, "structure",
               "Patient.gender");
    expect_err("{'resourceType':'Patient','maritalStatus':[{'text':'x'}]}", ST_UNPROCESSABLE, "structure",
               "Patient.maritalStatus");
    expect_err("{'resourceType':'Patient','name':[{'family':['A']}]}", ST_UNPROCESSABLE, "structure",
               "Patient.name[0].family");
    /* single value where an array belongs */
    expect_err("{'resourceType':'Patient','name':{'family':'X'}}", ST_UNPROCESSABLE, "structure",
               "Patient.name");
    expect_err("{'resourceType':'Patient','name':[{'given':'Jo'}]}", ST_UNPROCESSABLE, "structure",
               "Patient.name[0].given");
    expect_err("{'resourceType':'Patient','name':[{'given':['a','b'],'_given':{'id':'x'}}]}",
               ST_UNPROCESSABLE, "structure", "Patient.name[0]._given");
    /* empty arrays and objects are not FHIR */
    expect_err("{'resourceType':'Patient','name':[]}", ST_UNPROCESSABLE, "structure", "Patient.name");
    expect_err("{'resourceType':'Patient','maritalStatus':{}}", ST_UNPROCESSABLE, "structure",
               "Patient.maritalStatus");
    expect_err("{'resourceType':'Patient','name':[{'family':'x'},{}]}", ST_UNPROCESSABLE, "structure",
               "Patient.name[1]");
    /* parallel arrays must have the same length */
    expect_err("{'resourceType':'Patient','name':[{'given':['a','b'],'_given':[{'id':'x'}]}]}",
               ST_UNPROCESSABLE, "structure", "Patient.name[0]._given");
}

static void test_required(void **state) {
    (void)state;
    expect_err("{'resourceType':'Observation','code':{'text':'x'}}", ST_UNPROCESSABLE, "required",
               "Observation.status");
    expect_err("{'resourceType':'Observation','status':'final'}", ST_UNPROCESSABLE, "required",
               "Observation.code");
    /* in a backbone element */
    expect_err("{'resourceType':'Observation','status':'final','code':{'text':'x'},"
               "'component':[{'code':{'text':'a'}},{'valueString':'b'}]}",
               ST_UNPROCESSABLE, "required", "Observation.component[1].code");
    /* in a datatype */
    expect_err("{'resourceType':'Patient','text':{'div':'<div>x</div>'}}", ST_UNPROCESSABLE, "required",
               "Patient.text.status");
    /* a required choice: any one typed name */
    expect_err("{'resourceType':'Questionnaire','status':'draft','item':[{'linkId':'1',"
               "'type':'boolean','enableWhen':[{'question':'1','operator':'='}]}]}",
               ST_UNPROCESSABLE, "required", "Questionnaire.item[0].enableWhen[0].answer[x]");
    /* through a content reference */
    expect_err("{'resourceType':'Questionnaire','status':'draft','item':[{'linkId':'1',"
               "'type':'group','item':[{'linkId':'1.1'}]}]}",
               ST_UNPROCESSABLE, "required", "Questionnaire.item[0].item[0].type");
    expect_err("{'resourceType':'Questionnaire','status':'draft','item':[{'linkId':'1',"
               "'type':'group','item':[{'linkId':'1.1','type':'string','bogus':1}]}]}",
               ST_INVALID, "structure", "Questionnaire.item[0].item[0].bogus");
}

static void test_extensions(void **state) {
    (void)state;
    expect_err("{'resourceType':'Patient','extension':[{'valueString':'x'}]}", ST_UNPROCESSABLE, "required",
               "Patient.extension[0].url");
    expect_err("{'resourceType':'Patient','extension':[{'url':'http://a','extension':"
               "[{'url':'b'},{'valueInteger':1}]}]}",
               ST_UNPROCESSABLE, "required", "Patient.extension[0].extension[1].url");
    expect_err("{'resourceType':'Patient','_birthDate':{'extension':[{'valueCode':'x'}]}}", ST_UNPROCESSABLE,
               "required", "Patient._birthDate.extension[0].url");
    expect_err("{'resourceType':'Patient','extension':[{'url':'http://a','valueFoo':'x'}]}", ST_INVALID,
               "structure", "Patient.extension[0].valueFoo");
    expect_err("{'resourceType':'Patient','extension':{'url':'http://a','valueString':'x'}}",
               ST_UNPROCESSABLE, "structure", "Patient.extension");
    expect_err("{'resourceType':'Patient','extension':[{'url':'http://a b','valueString':'x'}]}",
               ST_UNPROCESSABLE, "value", "Patient.extension[0].url");
}

static void test_primitive_formats(void **state) {
    (void)state;
    /* dates */
    expect_err("{'resourceType':'Patient','birthDate':'1980-13-01'}", ST_UNPROCESSABLE, "value",
               "Patient.birthDate");
    expect_err("{'resourceType':'Patient','birthDate':'1981-02-29'}", ST_UNPROCESSABLE, "value",
               "Patient.birthDate");
    expect_err("{'resourceType':'Patient','birthDate':'1980-04-31'}", ST_UNPROCESSABLE, "value",
               "Patient.birthDate");
    expect_err("{'resourceType':'Patient','birthDate':'0000'}", ST_UNPROCESSABLE, "value",
               "Patient.birthDate");
    expect_err("{'resourceType':'Patient','birthDate':'80-01-01'}", ST_UNPROCESSABLE, "value",
               "Patient.birthDate");
    expect_err("{'resourceType':'Patient','birthDate':'1980-01-01T00:00:00Z'}", ST_UNPROCESSABLE, "value",
               "Patient.birthDate");
    expect_ok("{'resourceType':'Patient','birthDate':'1980'}");
    expect_ok("{'resourceType':'Patient','birthDate':'1980-12'}");
    expect_ok("{'resourceType':'Patient','birthDate':'2000-02-29'}");
    expect_err("{'resourceType':'Patient','birthDate':'1900-02-29'}", ST_UNPROCESSABLE, "value",
               "Patient.birthDate");
    /* dateTime: a time needs seconds and a zone */
    expect_err("{'resourceType':'Patient','deceasedDateTime':'2020-01-01T10:00:00'}", ST_UNPROCESSABLE,
               "value", "Patient.deceasedDateTime");
    expect_err("{'resourceType':'Patient','deceasedDateTime':'2020-01-01T10:00Z'}", ST_UNPROCESSABLE, "value",
               "Patient.deceasedDateTime");
    expect_err("{'resourceType':'Patient','deceasedDateTime':'2020-01T10:00:00Z'}", ST_UNPROCESSABLE, "value",
               "Patient.deceasedDateTime");
    expect_err("{'resourceType':'Patient','deceasedDateTime':'2020-01-01T24:00:00Z'}", ST_UNPROCESSABLE,
               "value", "Patient.deceasedDateTime");
    expect_err("{'resourceType':'Patient','deceasedDateTime':'2020-01-01T10:00:00+14:30'}", ST_UNPROCESSABLE,
               "value", "Patient.deceasedDateTime");
    expect_err("{'resourceType':'Patient','deceasedDateTime':'2020-01-01T10:00:00.Z'}", ST_UNPROCESSABLE,
               "value", "Patient.deceasedDateTime");
    expect_ok("{'resourceType':'Patient','deceasedDateTime':'2020-01-01T10:00:00-14:00'}");
    expect_ok("{'resourceType':'Patient','deceasedDateTime':'2020-01'}");
    /* instant: full date, time with seconds, zone */
    expect_err("{'resourceType':'Patient','meta':{'lastUpdated':'2020-01-01'}}", ST_UNPROCESSABLE, "value",
               "Patient.meta.lastUpdated");
    expect_err("{'resourceType':'Patient','meta':{'lastUpdated':'2020-01-01T10:00:00'}}", ST_UNPROCESSABLE,
               "value", "Patient.meta.lastUpdated");
    /* time */
    expect_err("{'resourceType':'Observation','status':'final','code':{'text':'x'},"
               "'valueTime':'10:00'}",
               ST_UNPROCESSABLE, "value", "Observation.valueTime");
    /* ids */
    expect_err("{'resourceType':'Patient','id':'a b'}", ST_UNPROCESSABLE, "value", "Patient.id");
    expect_err("{'resourceType':'Patient','id':'abc_1'}", ST_UNPROCESSABLE, "value", "Patient.id");
    expect_err("{'resourceType':'Patient','id':"
               "'0123456789012345678901234567890123456789012345678901234567890123x'}",
               ST_UNPROCESSABLE, "value", "Patient.id");
    expect_err("{'resourceType':'Patient','id':7}", ST_INVALID, "structure", "Patient.id");
    /* empty strings */
    expect_err("{'resourceType':'Patient','name':[{'family':''}]}", ST_UNPROCESSABLE, "value",
               "Patient.name[0].family");
    expect_err("{'resourceType':'Patient','name':[{'given':['a','']}]}", ST_UNPROCESSABLE, "value",
               "Patient.name[0].given[1]");
    /* codes */
    expect_err("{'resourceType':'Patient','gender':' male'}", ST_UNPROCESSABLE, "value", "Patient.gender");
    expect_err("{'resourceType':'Patient','gender':'male '}", ST_UNPROCESSABLE, "value", "Patient.gender");
    expect_err("{'resourceType':'Patient','gender':'a  b'}", ST_UNPROCESSABLE, "value", "Patient.gender");
    /* uri, uuid */
    expect_err("{'resourceType':'Patient','identifier':[{'system':'http://a b'}]}", ST_UNPROCESSABLE, "value",
               "Patient.identifier[0].system");
    expect_err("{'resourceType':'Observation','status':'final','code':{'text':'x'},"
               "'extension':[{'url':'http://x','valueUuid':'urn:uuid:ABC'}]}",
               ST_UNPROCESSABLE, "value", "Observation.extension[0].valueUuid");
    expect_err("{'resourceType':'Observation','status':'final','code':{'text':'x'},"
               "'extension':[{'url':'http://x','valueOid':'urn:oid:1.02'}]}",
               ST_UNPROCESSABLE, "value", "Observation.extension[0].valueOid");
    expect_ok("{'resourceType':'Observation','status':'final','code':{'text':'x'},"
              "'extension':[{'url':'http://x','valueOid':'urn:oid:2.16.840.1.113883'}]}");
    /* numbers */
    expect_err("{'resourceType':'Appointment','status':'booked','participant':[{'status':"
               "'accepted'}],'minutesDuration':0}",
               ST_UNPROCESSABLE, "value", "Appointment.minutesDuration");
    expect_err("{'resourceType':'Appointment','status':'booked','participant':[{'status':"
               "'accepted'}],'priority':-1}",
               ST_UNPROCESSABLE, "value", "Appointment.priority");
    expect_err("{'resourceType':'Patient','multipleBirthInteger':1.5}", ST_UNPROCESSABLE, "value",
               "Patient.multipleBirthInteger");
    expect_err("{'resourceType':'Patient','multipleBirthInteger':2147483648}", ST_UNPROCESSABLE, "value",
               "Patient.multipleBirthInteger");
    /* narrative */
    expect_err("{'resourceType':'Patient','text':{'status':'generated','div':'<p>x</p>'}}", ST_UNPROCESSABLE,
               "value", "Patient.text.div");
    /* base64 */
    expect_err("{'resourceType':'Binary','contentType':'text/plain','data':'a$b='}", ST_UNPROCESSABLE,
               "value", "Binary.data");
}

static void test_resource_type(void **state) {
    json_t *j;
    err e;
    (void)state;
    expect_err("{'resourceType':'Patientx'}", ST_INVALID, "invalid", "resourceType");
    expect_err("{'resourceType':'DomainResource'}", ST_INVALID, "invalid", "resourceType");
    expect_err("{'resourceType':'HumanName'}", ST_INVALID, "invalid", "resourceType");
    expect_err("{'id':'x'}", ST_INVALID, "invalid", "resourceType");
    expect_err("{'resourceType':7}", ST_INVALID, "invalid", "resourceType");
    expect_err("['Patient']", ST_INVALID, "structure", "");

    j = J("{'resourceType':'Patient'}");
    assert_int_equal(fhir_validate(j, "Patient", &e), ST_OK);
    assert_int_equal(fhir_validate(j, "Observation", &e), ST_INVALID);
    assert_string_equal(e.where, "resourceType");
    assert_string_equal(e.issue, "invalid");
    assert_int_equal(fhir_validate(j, NULL, NULL), ST_OK);
    json_decref(j);
}

static void test_nested_resources(void **state) {
    (void)state;
    expect_err("{'resourceType':'Patient','contained':[{'resourceType':'Organization','id':'o1'},"
               "{'resourceType':'Observation','id':'o2','code':{'text':'x'}}]}",
               ST_UNPROCESSABLE, "required", "Patient.contained[1].status");
    expect_err("{'resourceType':'Patient','contained':[{'resourceType':'Practitioner',"
               "'name':[{'given':['a',7]}]}]}",
               ST_INVALID, "structure", "Patient.contained[0].name[0].given[1]");
    expect_err("{'resourceType':'Patient','contained':[{'resourceType':'Nope'}]}", ST_INVALID, "invalid",
               "Patient.contained[0].resourceType");
    expect_err("{'resourceType':'Bundle','type':'collection','entry':[{'resource':"
               "{'resourceType':'Patient'}},{'resource':{'resourceType':'Patient',"
               "'birthDate':'1980-1-1'}}]}",
               ST_UNPROCESSABLE, "value", "Bundle.entry[1].resource.birthDate");
    expect_err("{'resourceType':'Bundle','type':'collection','entry':[{'resource':"
               "{'resourceType':'Bundle','type':'collection','entry':[{'resource':"
               "{'resourceType':'Patient','foo':1}}]}}]}",
               ST_INVALID, "structure", "Bundle.entry[0].resource.entry[0].resource.foo");
    expect_err("{'resourceType':'Parameters','parameter':[{'name':'a','resource':"
               "{'resourceType':'Patient','active':1}}]}",
               ST_INVALID, "structure", "Parameters.parameter[0].resource.active");
    expect_err("{'resourceType':'Bundle','type':'collection','entry':[{'resource':'Patient'}]}", ST_INVALID,
               "structure", "Bundle.entry[0].resource");
    expect_err("{'resourceType':'Bundle','type':'collection','entry':[{'resource':"
               "[{'resourceType':'Patient'}]}]}",
               ST_UNPROCESSABLE, "structure", "Bundle.entry[0].resource");
}

static void test_deep_nesting(void **state) {
    /* extensions nest without end in the model; the walk stops at a depth */
    char buf[4096] = "{'resourceType':'Patient','extension':[";
    json_t *j;
    err e;
    size_t n = strlen(buf);
    (void)state;
    for (int i = 0; i < 120; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "{'url':'u','extension':[");
    n += (size_t)snprintf(buf + n, sizeof buf - n, "{'url':'u','valueString':'x'}");
    for (int i = 0; i < 120; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "]}");
    snprintf(buf + n, sizeof buf - n, "]}");
    j = J(buf);
    assert_int_equal(fhir_validate(j, NULL, &e), ST_INVALID);
    assert_string_equal(e.issue, "invalid");
    json_decref(j);
}

static void test_id_valid(void **state) {
    (void)state;
    assert_true(fhir_id_valid("a"));
    assert_true(fhir_id_valid("Pat-1.2"));
    assert_true(fhir_id_valid("0123456789012345678901234567890123456789012345678901234567890123"));
    assert_false(fhir_id_valid("01234567890123456789012345678901234567890123456789012345678901234"));
    assert_false(fhir_id_valid(""));
    assert_false(fhir_id_valid(NULL));
    assert_false(fhir_id_valid("a_b"));
    assert_false(fhir_id_valid("a b"));
    assert_false(fhir_id_valid("a/b"));
    assert_false(fhir_id_valid("\xc3\xa9"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_examples), cmocka_unit_test(test_valid_shapes),
        cmocka_unit_test(test_unknown_elements),   cmocka_unit_test(test_wrong_json_kind),
        cmocka_unit_test(test_cardinality),        cmocka_unit_test(test_required),
        cmocka_unit_test(test_extensions),         cmocka_unit_test(test_primitive_formats),
        cmocka_unit_test(test_resource_type),      cmocka_unit_test(test_nested_resources),
        cmocka_unit_test(test_deep_nesting),       cmocka_unit_test(test_id_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
