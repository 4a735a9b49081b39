/*
 * test_registry_compare.c — the field comparators (src/registry/compare.c):
 * Jaro and Jaro-Winkler against the published reference table, Soundex and
 * NYSIIS against codes worked by hand from the published procedures, name
 * normalisation (case, accents, apostrophes, hyphens, titles), and every
 * comparison level of names, dates of birth, sex, postcodes (including the
 * NHS pseudo-postcodes), addresses and NHS numbers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "registry/compare.h"

static double jaro(const char *a, const char *b) {
    return cmp_jaro(a, strlen(a), b, strlen(b));
}
static double jw(const char *a, const char *b) {
    return cmp_jaro_winkler(a, strlen(a), b, strlen(b));
}

#define assert_near(x, want, tol)                                                                            \
    do {                                                                                                     \
        double x_ = (x), w_ = (want);                                                                        \
        if (!(x_ >= w_ - (tol) && x_ <= w_ + (tol)))                                                         \
            fail_msg("%s = %.6f, want %.6f +- %g", #x, x_, w_, (tol));                                       \
    } while (0)

/* The worked examples, exactly (fractions from the definition):
 * MARTHA/MARHTA: m = 6, t = 1: (1 + 1 + 5/6) / 3 = 17/18; prefix 3: + 0.3 (1/18)
 * DWAYNE/DUANE: window 2, m = 4 (D A N E), t = 0: (4/6 + 4/5 + 1) / 3 = 37/45; prefix 1
 * DIXON/DICKSONX: window 3, m = 4 (D I O N), t = 0: (4/5 + 4/8 + 1) / 3 = 23/30; prefix 2 */
static void test_jaro_winkler_worked_examples(void **state) {
    (void)state;
    assert_near(jaro("MARTHA", "MARHTA"), 17.0 / 18.0, 1e-12);
    assert_near(jw("MARTHA", "MARHTA"), 17.0 / 18.0 + 0.3 / 18.0, 1e-12);
    assert_near(jw("MARTHA", "MARHTA"), 0.961, 0.0005);
    assert_near(jaro("DWAYNE", "DUANE"), 37.0 / 45.0, 1e-12);
    assert_near(jw("DWAYNE", "DUANE"), 0.84, 1e-12);
    assert_near(jaro("DIXON", "DICKSONX"), 23.0 / 30.0, 1e-12);
    assert_near(jw("DIXON", "DICKSONX"), 23.0 / 30.0 + 0.2 * 7.0 / 30.0, 1e-12);
    assert_near(jw("DIXON", "DICKSONX"), 0.813, 0.0005);
}

/* The comparison table of Winkler (1990), three decimals as published
 * (Jaro, Jaro-Winkler); every row also checked against the definition
 * independently of this code. */
static void test_jaro_winkler_published_table(void **state) {
    (void)state;
    static const struct {
        const char *a, *b;
        double jaro, jw;
    } t[] = {
        {"SHACKLEFORD", "SHACKELFORD", 0.970, 0.982},
        {"DUNNINGHAM", "CUNNIGHAM", 0.896, 0.896},
        {"NICHLESON", "NICHULSON", 0.926, 0.956},
        {"JONES", "JOHNSON", 0.790, 0.832},
        {"MASSEY", "MASSIE", 0.889, 0.933},
        {"ABROMS", "ABRAMS", 0.889, 0.922},
        {"HARDIN", "MARTINEZ", 0.722, 0.722},
        {"ITMAN", "SMITH", 0.467, 0.467},
        {"JERALDINE", "GERALDINE", 0.926, 0.926},
        {"MARHTA", "MARTHA", 0.944, 0.961},
        {"MICHELLE", "MICHAEL", 0.869, 0.921},
        {"JULIES", "JULIUS", 0.889, 0.933},
        {"TANYA", "TONYA", 0.867, 0.880},
        {"DWAYNE", "DUANE", 0.822, 0.840},
        {"SEAN", "SUSAN", 0.783, 0.805},
        {"JON", "JOHN", 0.917, 0.933},
        {"JON", "JAN", 0.778, 0.800},
        {"DIXON", "DICKSONX", 0.767, 0.813},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        double j = jaro(t[i].a, t[i].b), w = jw(t[i].a, t[i].b);
        if (j < t[i].jaro - 0.0005 || j > t[i].jaro + 0.0005 || w < t[i].jw - 0.0005 || w > t[i].jw + 0.0005)
            fail_msg("%s/%s: jaro %.4f (want %.3f), jw %.4f (want %.3f)", t[i].a, t[i].b, j, t[i].jaro, w,
                     t[i].jw);
        /* symmetric */
        assert_near(jaro(t[i].b, t[i].a), j, 1e-12);
        assert_near(jw(t[i].b, t[i].a), w, 1e-12);
    }
}

static void test_jaro_edges(void **state) {
    (void)state;
    assert_near(jaro("", ""), 1.0, 0);
    assert_near(jaro("", "A"), 0.0, 0);
    assert_near(jaro("A", ""), 0.0, 0);
    assert_near(jaro("A", "A"), 1.0, 0);
    assert_near(jaro("A", "B"), 0.0, 0);
    assert_near(jaro("AB", "BA"), 0.0, 0); /* window 0: no match */
    assert_near(jaro("SMITH", "SMITH"), 1.0, 0);
    assert_near(jaro("ABC", "XYZ"), 0.0, 0);
    /* below the boost threshold the prefix does not count: m = 2 of 8 */
    assert_near(jaro("ABCDEFGH", "ABWXYZUV"), 0.5, 1e-12);
    assert_near(jw("ABCDEFGH", "ABWXYZUV"), 0.5, 1e-12);
    /* the prefix counts at most 4 characters */
    assert_near(jw("ABCDEFGHIJ", "ABCDEFGHIX"),
                jaro("ABCDEFGHIJ", "ABCDEFGHIX") + 0.4 * (1 - jaro("ABCDEFGHIJ", "ABCDEFGHIX")), 1e-12);
    /* strings longer than the stack buffer */
    char a[600], b[600];
    memset(a, 'A', 599);
    a[599] = 0;
    memcpy(b, a, 600);
    assert_near(jaro(a, b), 1.0, 0);
    b[300] = 'B';
    double j = jaro(a, b);
    assert_true(j > 0.99 && j < 1.0);
    /* bytes, not C strings */
    assert_near(cmp_jaro("A\0B", 3, "A\0B", 3), 1.0, 0);
}

static void sx(const char *name, const char *want) {
    char out[5];
    cmp_soundex(name, strlen(name), out);
    if (strcmp(out, want) != 0) fail_msg("soundex(%s) = %s, want %s", name, out, want);
}

/* American Soundex, the National Archives' examples and rules. */
static void test_soundex(void **state) {
    (void)state;
    sx("Robert", "R163");
    sx("Rupert", "R163");
    sx("Rubin", "R150");
    sx("Ashcraft", "A261"); /* S and C separated by H: coded once */
    sx("Ashcroft", "A261");
    sx("Tymczak", "T522"); /* C and Z adjacent: one 2; a vowel separates K */
    sx("Pfister", "P236"); /* F has P's code: not coded again */
    sx("Honeyman", "H555");
    sx("Lee", "L000");
    sx("Gutierrez", "G362");
    sx("Jackson", "J250");
    sx("O'Hara", "O600");
    sx("washington", "W252");
    char out[5];
    assert_int_equal(cmp_soundex("", 0, out), 0);
    assert_string_equal(out, "");
    assert_int_equal(cmp_soundex("123", 3, out), 0);
}

static void ny(const char *name, const char *want) {
    char out[32];
    cmp_nysiis(name, strlen(name), out, sizeof out);
    if (strcmp(out, want) != 0) fail_msg("nysiis(%s) = %s, want %s", name, out, want);
}

/* NYSIIS (Taft 1970), worked through the procedure by hand:
 * MACINTOSH: MAC -> MCC; M C (C) A N T A S (H -> S) ; drop S, drop A -> MCANT
 * KNUTH: KN -> NN; N (N) A T (H -> T) -> NAT
 * BROWN: B R A (W after a vowel -> A) N -> BRAN
 * JOHNSON: J A (H before N -> A) N S A N -> JANSAN
 * WILLIAMS: W A L (L) A (A) N S -> drop S -> WALAN
 * SCHMIDT: SCH -> SSS, DT -> D; S (S S) N A D -> SNAD
 * PHILLIPS: PH -> FF; F (F) A L (L) A P S -> drop S -> FALAP
 * MCKEE: EE -> Y; M C (K -> C) Y -> MCY
 * EVANS: E V A N S -> drop S -> EVAN
 * HAYES: H A Y A S -> drop S, then AY... ends A -> HAYA -> drop A -> HAY */
static void test_nysiis(void **state) {
    (void)state;
    ny("MACINTOSH", "MCANT");
    ny("Knuth", "NAT");
    ny("BROWN", "BRAN");
    ny("JOHNSON", "JANSAN");
    ny("WILLIAMS", "WALAN");
    ny("SCHMIDT", "SNAD");
    ny("PHILLIPS", "FALAP");
    ny("MCKEE", "MCY");
    ny("EVANS", "EVAN");
    ny("HAYES", "HAY");
    char out[4];
    assert_int_equal(cmp_nysiis("MACINTOSH", 9, out, sizeof out), 3); /* truncated to cap - 1 */
    assert_string_equal(out, "MCA");
    assert_int_equal(cmp_nysiis("", 0, out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(cmp_nysiis("S", 1, out, sizeof out), 1); /* a lone S is kept */
}

static void norm(const char *in, const char *want) {
    char out[64];
    cmp_name_normalise(in, strlen(in), out, sizeof out);
    if (strcmp(out, want) != 0) fail_msg("normalise(\"%s\") = \"%s\", want \"%s\"", in, out, want);
}

static void test_name_normalise(void **state) {
    (void)state;
    norm("  Mrs  Sarah  ", "SARAH");
    norm("O'Brien", "OBRIEN");
    norm("O\xe2\x80\x99"
         "Brien",
         "OBRIEN"); /* right single quotation mark */
    norm("Smith-Jones", "SMITH JONES");
    norm("Jos\xc3\xa9", "JOSE");
    norm("M\xc3\xbcller", "MULLER");
    norm("Stra\xc3\x9f"
         "e",
         "STRASSE");
    norm("\xc5\x81ukasz", "LUKASZ"); /* L with stroke */
    norm("\xc3\x98yvind", "OYVIND");
    norm("\xc5\x9a"
         "wi\xc4\x85tek",
         "SWIATEK");
    norm("Dr. John Smith Jr.", "JOHN SMITH");
    norm("Mr", "MR"); /* a title alone is the name */
    norm("Lord", "LORD");
    norm("van der Berg", "VAN DER BERG");
    norm("J0hn", "JHN");
    norm("\xff\xfe"
         "Ann\xc3",
         "ANN");                                  /* invalid UTF-8 dropped */
    norm("\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd", ""); /* Cyrillic: not a Latin letter */
    norm("", "");
    char small[6];
    assert_int_equal(cmp_name_normalise("Alexander", 9, small, sizeof small), 5);
    assert_string_equal(small, "ALEXA");
    char one[1];
    assert_int_equal(cmp_name_normalise("Ann", 3, one, 1), 0);
    assert_string_equal(one, "");
}

static int nlevel(const char *a, const char *b, int given) {
    cmp_name x, y;
    cmp_name_prepare(&x, a, strlen(a));
    cmp_name_prepare(&y, b, strlen(b));
    int l = cmp_name_level(&x, &y, given);
    assert_int_equal(cmp_name_level(&y, &x, given), l); /* symmetric */
    return l;
}

static void test_name_levels(void **state) {
    (void)state;
    assert_int_equal(nlevel("Smith", "SMITH", 0), CMP_NAME_EXACT);
    assert_int_equal(nlevel("Smith-Jones", "Smith Jones", 0), CMP_NAME_EXACT);
    assert_int_equal(nlevel("McDonald", "Mc Donald", 0), CMP_NAME_EXACT);
    assert_int_equal(nlevel("Mohammed", "Mohamed", 1), CMP_NAME_JW_HIGH); /* 0.975 */
    assert_int_equal(nlevel("Johnson", "Jonson", 0), CMP_NAME_JW_HIGH);   /* 0.962 */
    assert_int_equal(nlevel("Evans", "Evaos", 0), CMP_NAME_JW_MID);       /* 0.907 */
    assert_int_equal(nlevel("Smith", "Smyth", 0), CMP_NAME_JW_MID);       /* 0.893 */
    assert_int_equal(nlevel("Robert", "Rupert", 1), CMP_NAME_VARIANT);    /* jw 0.80, Soundex R163 both */
    assert_int_equal(nlevel("Alex", "Alexander", 1), CMP_NAME_JW_MID);    /* 0.889 */
    assert_int_equal(nlevel("Dan", "Daniel", 1), CMP_NAME_JW_MID);
    assert_int_equal(nlevel("J", "John", 1), CMP_NAME_VARIANT);            /* an initial */
    assert_int_equal(nlevel("Smith Jones", "Jones", 0), CMP_NAME_VARIANT); /* one word of two */
    assert_int_equal(nlevel("Margaret", "Maggie", 1), CMP_NAME_VARIANT);   /* diminutive */
    assert_int_equal(nlevel("William", "Bill", 1), CMP_NAME_VARIANT);
    assert_int_equal(nlevel("William", "Bill", 0), CMP_NAME_DIFFERENT); /* not for family names */
    assert_int_equal(nlevel("Charlotte", "Lottie", 1), CMP_NAME_VARIANT);
    assert_int_equal(nlevel("Smith", "Patel", 0), CMP_NAME_DIFFERENT);
    assert_int_equal(nlevel("", "Patel", 0), CMP_MISSING);
    assert_int_equal(nlevel("Mr", "", 0), CMP_MISSING);
    assert_int_equal(nlevel("\xd0\x98\xd0\xb2", "Ivan", 1), CMP_MISSING);
}

static void test_given_variants(void **state) {
    (void)state;
    /* spread over the table, so an unsorted entry would fail the search */
    static const char *const yes[][2] = {
        {"ABBY", "ABIGAIL"},    {"BILL", "WILLIAM"},   {"PEGGY", "MARGARET"},    {"ZAK", "ZACHARY"},
        {"TED", "EDWARD"},      {"TED", "THEODORE"},   {"ALEX", "ALEXANDRA"},    {"SAM", "SAMUEL"},
        {"NED", "EDWARD"},      {"DICK", "RICHARD"},   {"PEGGY", "MAGGIE"},      {"BOB", "ROBBIE"},
        {"VAL", "VALERIE"},     {"KATE", "CATHERINE"}, {"BECKY", "REBECCA"},     {"HARRY", "HENRY"},
        {"LIBBY", "ELIZABETH"}, {"JACK", "JOHN"},      {"CHARLIE", "CHARLOTTE"}, {"ABBEY", "ABBY"},
    };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (!cmp_given_variant(yes[i][0], strlen(yes[i][0]), yes[i][1], strlen(yes[i][1])))
            fail_msg("%s / %s should be variants", yes[i][0], yes[i][1]);
        assert_true(cmp_given_variant(yes[i][1], strlen(yes[i][1]), yes[i][0], strlen(yes[i][0])));
    }
    static const char *const no[][2] = {
        {"BILL", "ROBERT"}, {"TED", "WILLIAM"}, {"ZZZ", "AAA"}, {"SAM", "SARAH"}};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (cmp_given_variant(no[i][0], strlen(no[i][0]), no[i][1], strlen(no[i][1])))
            fail_msg("%s / %s should not be variants", no[i][0], no[i][1]);
    assert_false(cmp_given_variant("", 0, "BILL", 4));
}

static cmp_date date(const char *s) {
    cmp_date d;
    if (cmp_date_parse(s, strlen(s), &d) != 0) fail_msg("date \"%s\" rejected", s);
    return d;
}

static void bad_date(const char *s) {
    cmp_date d = {1, 1, 1};
    if (cmp_date_parse(s, strlen(s), &d) == 0) fail_msg("date \"%s\" accepted", s);
    assert_true(d.y == 0 && d.m == 0 && d.d == 0);
}

static void test_dates(void **state) {
    (void)state;
    cmp_date d = date("1970-07-03");
    assert_true(d.y == 1970 && d.m == 7 && d.d == 3);
    d = date("03/07/1970");
    assert_true(d.y == 1970 && d.m == 7 && d.d == 3);
    d = date("19700703");
    assert_true(d.y == 1970 && d.m == 7 && d.d == 3);
    d = date("197007031230");
    assert_true(d.y == 1970 && d.m == 7 && d.d == 3);
    d = date(" 1970-07 ");
    assert_true(d.y == 1970 && d.m == 7 && d.d == 0);
    d = date("1970");
    assert_true(d.y == 1970 && d.m == 0 && d.d == 0);
    d = date("2024-02-29");
    assert_true(d.m == 2 && d.d == 29);
    bad_date("2023-02-29");
    bad_date("1900-02-29");
    bad_date("13/13/2000");
    bad_date("2000-00-10");
    bad_date("00/01/2000");
    bad_date("abcd-ef-gh");
    bad_date("");
    bad_date("1700-01-01");
    bad_date("19700732");
    bad_date("1970-7-3");
}

static int dlevel(const char *a, const char *b) {
    cmp_date x = {0, 0, 0}, y = {0, 0, 0};
    if (*a) x = date(a);
    if (*b) y = date(b);
    int l = cmp_dob_level(x, y);
    assert_int_equal(cmp_dob_level(y, x), l);
    return l;
}

static void test_dob_levels(void **state) {
    (void)state;
    assert_int_equal(dlevel("1984-07-09", "1984-07-09"), CMP_DOB_EXACT);
    assert_int_equal(dlevel("1984-07-09", "1984-09-07"), CMP_DOB_TRANSPOSED);
    assert_int_equal(dlevel("1984-05-05", "1984-05-05"), CMP_DOB_EXACT);
    assert_int_equal(dlevel("1984-07-09", "1984-07-10"), CMP_DOB_ONE_OFF); /* day */
    assert_int_equal(dlevel("1984-07-09", "1984-08-09"), CMP_DOB_ONE_OFF); /* month */
    assert_int_equal(dlevel("1984-07-09", "1948-07-09"), CMP_DOB_ONE_OFF); /* year */
    assert_int_equal(dlevel("1984-07-09", "1985-09-07"), CMP_DOB_DIFFERENT);
    assert_int_equal(dlevel("1984-07-09", "1984-08-10"), CMP_DOB_DIFFERENT);
    assert_int_equal(dlevel("1961-03-31", "1961-04-01"), CMP_DOB_ONE_OFF); /* a day apart */
    assert_int_equal(dlevel("1973-12-31", "1974-01-01"), CMP_DOB_ONE_OFF);
    assert_int_equal(dlevel("2024-02-29", "2024-03-01"), CMP_DOB_ONE_OFF);
    assert_int_equal(dlevel("2023-02-28", "2023-03-01"), CMP_DOB_ONE_OFF);
    assert_int_equal(dlevel("2024-02-28", "2024-03-01"), CMP_DOB_DIFFERENT); /* two days in a leap year */
    assert_int_equal(dlevel("1973-12-30", "1974-01-01"), CMP_DOB_DIFFERENT);
    assert_int_equal(dlevel("1984", "1984-07-09"), CMP_DOB_PARTIAL);
    assert_int_equal(dlevel("1984-07", "1984-07-09"), CMP_DOB_PARTIAL);
    assert_int_equal(dlevel("1984-07", "1984-08-01"), CMP_DOB_DIFFERENT);
    assert_int_equal(dlevel("1984", "1985-07-09"), CMP_DOB_DIFFERENT);
    assert_int_equal(dlevel("", "1984-07-09"), CMP_MISSING);
    assert_int_equal(dlevel("", ""), CMP_MISSING);
}

static void test_sex(void **state) {
    (void)state;
    static const struct {
        const char *s;
        cmp_sex want;
    } t[] = {{"M", CMP_SEX_MALE},          {"male", CMP_SEX_MALE},   {"Male", CMP_SEX_MALE},
             {"1", CMP_SEX_MALE},          {" f ", CMP_SEX_FEMALE},  {"FEMALE", CMP_SEX_FEMALE},
             {"2", CMP_SEX_FEMALE},        {"other", CMP_SEX_OTHER}, {"Indeterminate", CMP_SEX_OTHER},
             {"unknown", CMP_SEX_UNKNOWN}, {"U", CMP_SEX_UNKNOWN},   {"0", CMP_SEX_UNKNOWN},
             {"9", CMP_SEX_UNKNOWN},       {"", CMP_SEX_UNKNOWN},    {"mal", CMP_SEX_UNKNOWN}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (cmp_sex_parse(t[i].s, strlen(t[i].s)) != t[i].want) fail_msg("sex \"%s\"", t[i].s);
    assert_int_equal(cmp_sex_parse(NULL, 0), CMP_SEX_UNKNOWN);
    assert_int_equal(cmp_sex_level(CMP_SEX_MALE, CMP_SEX_MALE), CMP_SEX_SAME);
    assert_int_equal(cmp_sex_level(CMP_SEX_MALE, CMP_SEX_FEMALE), CMP_SEX_DIFFERENT);
    assert_int_equal(cmp_sex_level(CMP_SEX_OTHER, CMP_SEX_OTHER), CMP_SEX_SAME);
    assert_int_equal(cmp_sex_level(CMP_SEX_UNKNOWN, CMP_SEX_UNKNOWN), CMP_MISSING);
    assert_int_equal(cmp_sex_level(CMP_SEX_FEMALE, CMP_SEX_UNKNOWN), CMP_MISSING);
}

static void pc(const char *in, cmp_postcode_kind kind, const char *want) {
    cmp_postcode p;
    cmp_postcode_kind k = cmp_postcode_parse(in, strlen(in), &p);
    if (k != kind || strcmp(p.pc, want) != 0)
        fail_msg("postcode \"%s\": kind %d \"%s\", want %d \"%s\"", in, k, p.pc, kind, want);
}

static void test_postcode_normalise(void **state) {
    (void)state;
    pc("W9 9WP", CMP_PC_FULL, "W9 9WP");
    pc("w99wp", CMP_PC_FULL, "W9 9WP");
    pc("  sw1a 1aa ", CMP_PC_FULL, "SW1A 1AA");
    pc("SW1A1AA", CMP_PC_FULL, "SW1A 1AA");
    pc("EC1A 1BB", CMP_PC_FULL, "EC1A 1BB");
    pc("NW10 4AB", CMP_PC_FULL, "NW10 4AB");
    pc("M1 1AE", CMP_PC_FULL, "M1 1AE");
    pc("B33 8TH", CMP_PC_FULL, "B33 8TH");
    pc("CR2 6XH", CMP_PC_FULL, "CR2 6XH");
    pc("GIR 0AA", CMP_PC_FULL, "GIR 0AA");
    pc("W9", CMP_PC_OUTWARD, "W9");
    pc("sw1a", CMP_PC_OUTWARD, "SW1A");
    pc("ZZ99 3VZ", CMP_PC_PSEUDO, ""); /* no fixed abode */
    pc("zz993wz", CMP_PC_PSEUDO, "");  /* not known */
    pc("ZZ99 3CZ", CMP_PC_PSEUDO, "");
    pc("", CMP_PC_MISSING, "");
    pc("   ", CMP_PC_MISSING, "");
    pc("QW1 1AA", CMP_PC_INVALID, ""); /* Q never first */
    pc("WJ1 1AA", CMP_PC_INVALID, ""); /* J never second */
    pc("W9 9CI", CMP_PC_INVALID, "");  /* C, I never in the unit */
    pc("W9 99W", CMP_PC_INVALID, "");
    pc("12345", CMP_PC_INVALID, "");
    pc("W9-9WP", CMP_PC_INVALID, "");
    pc("W1A 1AA1", CMP_PC_INVALID, "");
    pc("not known", CMP_PC_INVALID, "");
}

static int plevel(const char *a, const char *b) {
    cmp_postcode x, y;
    cmp_postcode_parse(a, strlen(a), &x);
    cmp_postcode_parse(b, strlen(b), &y);
    int l = cmp_postcode_level(&x, &y);
    assert_int_equal(cmp_postcode_level(&y, &x), l);
    return l;
}

static void test_postcode_levels(void **state) {
    (void)state;
    assert_int_equal(plevel("W9 9WP", "w99wp"), CMP_PC_LEVEL_FULL);
    assert_int_equal(plevel("W9 9WP", "W9 9XA"), CMP_PC_LEVEL_SECTOR);
    assert_int_equal(plevel("W9 9WP", "W9 3AB"), CMP_PC_LEVEL_DISTRICT);
    assert_int_equal(plevel("W9 9WP", "W10 9WP"), CMP_PC_LEVEL_AREA);
    assert_int_equal(plevel("NW8 7ZZ", "NW10 4AB"), CMP_PC_LEVEL_AREA);
    assert_int_equal(plevel("NW8 7ZZ", "W8 7ZZ"), CMP_PC_LEVEL_DIFFERENT); /* area NW is not W */
    assert_int_equal(plevel("W9 9WP", "SW5 9WP"), CMP_PC_LEVEL_DIFFERENT);
    assert_int_equal(plevel("W9", "W9 9WP"), CMP_PC_LEVEL_DISTRICT);
    assert_int_equal(plevel("W9", "W9"), CMP_PC_LEVEL_DISTRICT);
    assert_int_equal(plevel("W9", "W1 3QF"), CMP_PC_LEVEL_AREA);
    /* unknown is never a match, even with itself */
    assert_int_equal(plevel("ZZ99 3VZ", "ZZ99 3VZ"), CMP_MISSING);
    assert_int_equal(plevel("ZZ99 3VZ", "W9 9WP"), CMP_MISSING);
    assert_int_equal(plevel("", ""), CMP_MISSING);
    assert_int_equal(plevel("", "W9 9WP"), CMP_MISSING);
    assert_int_equal(plevel("rubbish", "rubbish"), CMP_MISSING);
}

static int alevel(const char *a, const char *b) {
    cmp_address x, y;
    cmp_address_prepare(&x, a, strlen(a));
    cmp_address_prepare(&y, b, strlen(b));
    int l = cmp_address_level(&x, &y);
    assert_int_equal(cmp_address_level(&y, &x), l);
    return l;
}

static double asim(const char *a, const char *b) {
    cmp_address x, y;
    cmp_address_prepare(&x, a, strlen(a));
    cmp_address_prepare(&y, b, strlen(b));
    return cmp_address_similarity(&x, &y);
}

static void test_address(void **state) {
    (void)state;
    assert_int_equal(alevel("12 High St", "12 HIGH STREET"), CMP_ADDR_EXACT);
    assert_int_equal(alevel("12, High Street.", "high street 12"), CMP_ADDR_EXACT);
    assert_int_equal(alevel("Flat 3, 12 High Street", "3 12 High Street"), CMP_ADDR_EXACT); /* FLAT dropped */
    assert_int_equal(alevel("12 High Street", "12 High Street North"), CMP_ADDR_NUMBER_STREET);
    assert_int_equal(alevel("12 High Street", "14 High Street"), CMP_ADDR_STREET);
    assert_int_equal(alevel("Flat 3, 12 High Street", "12 High Street"), CMP_ADDR_STREET);
    assert_int_equal(alevel("12 High Street", "12 Station Road"), CMP_ADDR_DIFFERENT);
    assert_int_equal(alevel("97 North End Road", "70 Station Road"), CMP_ADDR_DIFFERENT);
    assert_int_equal(alevel("", "12 High Street"), CMP_MISSING);
    assert_int_equal(alevel("---", "12 High Street"), CMP_MISSING);
    assert_near(asim("12 High Street", "12 High Street"), 1.0, 0);
    assert_near(asim("12 High Street", "14 High Street"), 0.5, 1e-12); /* 2 of 4 words */
    assert_near(asim("12 High Street", "99 Other Way"), 0.0, 0);
    assert_near(asim("", "99 Other Way"), 0.0, 0);
    /* at most CMP_ADDR_TOKENS words, sorted and distinct */
    cmp_address x;
    const char *longline = "1 2 3 4 5 6 7 8 9 10 11 12 A A A";
    cmp_address_prepare(&x, longline, strlen(longline));
    assert_int_equal(x.ntok, CMP_ADDR_TOKENS);
    for (int i = 1; i < x.ntok; i++)
        assert_true(x.tok[i - 1] < x.tok[i]);
}

static void test_nhs_levels(void **state) {
    (void)state;
    assert_int_equal(cmp_nhs_level("9434765919", 1, "9434765919", 1), CMP_NHS_AGREE);
    assert_int_equal(cmp_nhs_level("9434765919", 1, "9434765918", 0), CMP_NHS_CLOSE); /* one digit */
    assert_int_equal(cmp_nhs_level("9434765919", 1, "9437465919", 0), CMP_NHS_CLOSE); /* 4 and 7 swapped */
    assert_int_equal(cmp_nhs_level("9434765919", 1, "9990000018", 1), CMP_NHS_DISAGREE);
    assert_int_equal(cmp_nhs_level("9434765919", 1, "1234567890", 0), CMP_NHS_FAR_INVALID);
    assert_int_equal(cmp_nhs_level("9434765919", 1, "9434756919", 0), CMP_NHS_CLOSE);
    assert_int_equal(cmp_nhs_level("9434765919", 1, "3494765919", 0),
                     CMP_NHS_FAR_INVALID); /* 1st, 3rd swapped */
    assert_int_equal(cmp_nhs_level("1234567890", 0, "1234567890", 0), CMP_NHS_AGREE);
    assert_int_equal(cmp_nhs_level("", 0, "9434765919", 1), CMP_MISSING);
    assert_int_equal(cmp_nhs_level("", 0, "", 0), CMP_MISSING);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jaro_winkler_worked_examples),
        cmocka_unit_test(test_jaro_winkler_published_table),
        cmocka_unit_test(test_jaro_edges),
        cmocka_unit_test(test_soundex),
        cmocka_unit_test(test_nysiis),
        cmocka_unit_test(test_name_normalise),
        cmocka_unit_test(test_name_levels),
        cmocka_unit_test(test_given_variants),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_dob_levels),
        cmocka_unit_test(test_sex),
        cmocka_unit_test(test_postcode_normalise),
        cmocka_unit_test(test_postcode_levels),
        cmocka_unit_test(test_address),
        cmocka_unit_test(test_nhs_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
