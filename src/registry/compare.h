/*
 * compare.h — the field comparators of record linkage: string similarity
 * (Jaro, Jaro-Winkler), phonetic codes (Soundex, NYSIIS), and for each
 * demographic field a normaliser and a function that puts a pair of values
 * into one of a few agreement levels. The Fellegi-Sunter model (fs.h) gives
 * every level its own m and u probabilities; docs/registry.md describes the
 * levels and cites the algorithms.
 *
 * Conventions:
 *   - Inputs are byte ranges (pointer + length), need not be NUL-terminated,
 *     and are borrowed for the call only. Outputs are caller-owned,
 *     fixed-size structs or arrays; nothing here allocates except
 *     cmp_jaro/cmp_jaro_winkler for strings longer than 256 bytes.
 *   - Every *_level function returns a level index (0 = strongest agreement,
 *     increasing to "different"), or CMP_MISSING when either value is
 *     missing or unknown: missing is never a match and never a mismatch.
 *   - Pure functions, no global state: thread-safe.
 */
#ifndef CONCORD_REGISTRY_COMPARE_H
#define CONCORD_REGISTRY_COMPARE_H

#include <stddef.h>
#include <stdint.h>

#define CMP_MISSING (-1)

/* ---- string similarity ---------------------------------------------- */

/* Jaro similarity in [0, 1] of two byte strings (1 = identical; two empty
 * strings give 1, one empty gives 0). Matching characters are equal bytes no
 * further apart than max(|a|, |b|) / 2 - 1; t is half the number of matched
 * characters out of order; sim = (m/|a| + m/|b| + (m - t)/m) / 3. */
double cmp_jaro(const char *a, size_t an, const char *b, size_t bn);

/* Jaro-Winkler similarity: jaro + l * 0.1 * (1 - jaro), l = length of the
 * common prefix up to 4, applied only when jaro > 0.7 (Winkler's boost
 * threshold). */
double cmp_jaro_winkler(const char *a, size_t an, const char *b, size_t bn);

/* ---- phonetic codes ------------------------------------------------- */

/* American Soundex (US National Archives' rules, including the H/W rule):
 * the first letter and three digits, zero-padded, e.g. "R163" for Robert.
 * Only ASCII letters are read (others are skipped; pass a normalised name).
 * Writes "" and returns 0 if there is no letter; else returns 4. */
size_t cmp_soundex(const char *s, size_t n, char out[5]);

/* NYSIIS (Taft 1970), untruncated: the key of the letters of `s` (others are
 * skipped), at most cap - 1 bytes, NUL-terminated. Returns its length.
 * The original system kept the first 6 characters; callers may truncate. */
size_t cmp_nysiis(const char *s, size_t n, char *out, size_t cap);

/* ---- names ---------------------------------------------------------- */

/* Normalise a personal name written in UTF-8: Latin letters with accents
 * to their base letter (É -> E, ß -> SS, Ø -> O, Ł -> L...), upper case,
 * apostrophes dropped (O'Brien -> OBRIEN), hyphens and other punctuation to
 * a single space, digits and non-Latin characters dropped, leading titles
 * (MR, MRS, MS, MISS, MX, DR, PROF, REV, SIR, DAME, LADY, LORD, MASTER) and
 * trailing JR/SR/JNR/SNR removed when another word remains. Writes at most
 * cap - 1 bytes and a NUL; returns the length. cap must be >= 1. */
size_t cmp_name_normalise(const char *s, size_t n, char *out, size_t cap);

#define CMP_NAME_MAX 40 /* letters kept of a name, with its NUL */

/* A name prepared for comparison (cmp_name_prepare). */
typedef struct cmp_name {
    uint64_t breaks;      /* bit i set: a word of the name starts at s[i] (i > 0) */
    char s[CMP_NAME_MAX]; /* normalised letters without spaces ("SMITHJONES"); "" = missing */
    uint8_t len;
    char soundex[5];
    char nysiis[9]; /* first 8 characters of the NYSIIS key */
} cmp_name;

/* Normalise `s` and fill `out` (all fields). A name longer than
 * CMP_NAME_MAX - 1 letters is truncated. Borrows `s`. */
void cmp_name_prepare(cmp_name *out, const char *s, size_t n);

/* Name agreement levels. */
enum {
    CMP_NAME_EXACT = 0, /* same letters (spaces, hyphens, accents, case aside) */
    CMP_NAME_JW_HIGH,   /* Jaro-Winkler >= 0.92: a typing error */
    CMP_NAME_JW_MID,    /* Jaro-Winkler >= 0.85 */
    CMP_NAME_VARIANT,   /* same Soundex or NYSIIS, one word of a multi-word name, one is a
                         * prefix (>= 3 letters) or initial of the other, or (given names) a
                         * known diminutive: William/Bill, Margaret/Maggie */
    CMP_NAME_DIFFERENT,
    CMP_NAME_NLEVELS
};
#define CMP_NAME_JW_HIGH_MIN 0.92
#define CMP_NAME_JW_MID_MIN  0.85

/* Level of two prepared names; `given` enables the diminutives table. */
int cmp_name_level(const cmp_name *a, const cmp_name *b, int given);

/* 1 if the two given names are known variants of each other (the
 * diminutives table: Bill/William, Peggy/Margaret, ...). Normalised input. */
int cmp_given_variant(const char *a, size_t an, const char *b, size_t bn);

/* ---- dates of birth ------------------------------------------------- */

/* A date whose parts may be missing (0 = not known). */
typedef struct cmp_date {
    int16_t y;
    int8_t m, d;
} cmp_date;

/* Parse YYYY-MM-DD, YYYY-MM, YYYY, YYYYMMDD (and HL7 YYYYMMDDHHMM..., whose
 * time is ignored), DD/MM/YYYY. Surrounding whitespace is ignored. Returns 0
 * and fills `out`; or -1 (out zeroed) for an empty or impossible date
 * (month 13, 30 February, year outside 1800..2200). */
int cmp_date_parse(const char *s, size_t n, cmp_date *out);

enum {
    CMP_DOB_EXACT = 0,
    CMP_DOB_TRANSPOSED, /* day and month swapped (and different) */
    CMP_DOB_ONE_OFF,    /* exactly one of year, month, day differs, or the dates are a day apart
                         * (31 March / 1 April, 31 December / 1 January) */
    CMP_DOB_PARTIAL,    /* a part missing on one side (year-only, year-month); the rest agree */
    CMP_DOB_DIFFERENT,
    CMP_DOB_NLEVELS
};
/* CMP_MISSING if either year is unknown. */
int cmp_dob_level(cmp_date a, cmp_date b);

/* ---- sex ------------------------------------------------------------ */

typedef enum cmp_sex { CMP_SEX_UNKNOWN = 0, CMP_SEX_MALE, CMP_SEX_FEMALE, CMP_SEX_OTHER } cmp_sex;

/* M, Male, 1, F, Female, 2 (NHS Data Dictionary person stated gender
 * codes 1/2), FHIR male/female/other/unknown, O/Other/Indeterminate; 0, 9,
 * U, X, "", anything else: unknown. Case-insensitive. */
cmp_sex cmp_sex_parse(const char *s, size_t n);

enum { CMP_SEX_SAME = 0, CMP_SEX_DIFFERENT, CMP_SEX_NLEVELS };
int cmp_sex_level(cmp_sex a, cmp_sex b); /* CMP_MISSING if either is unknown */

/* ---- UK postcodes --------------------------------------------------- */

typedef enum cmp_postcode_kind {
    CMP_PC_MISSING = 0, /* empty */
    CMP_PC_FULL,        /* outward and inward code: "W9 9WP" */
    CMP_PC_OUTWARD,     /* outward code only: "W9" */
    CMP_PC_PSEUDO,      /* NHS pseudo-postcode ZZ99 ... (no fixed abode, abroad, not known) */
    CMP_PC_INVALID      /* not a postcode */
} cmp_postcode_kind;

typedef struct cmp_postcode {
    char pc[9];      /* "SW1A 1AA" (outward, space, inward) or outward only; "" unless FULL/OUTWARD */
    uint8_t outlen;  /* length of the outward code */
    uint8_t arealen; /* length of the area (its leading letters) */
    uint8_t kind;    /* cmp_postcode_kind */
} cmp_postcode;

/* Normalise (upper case, spaces dropped then one put before the inward code)
 * and classify. Structure checked: outward A9, A99, AA9, AA99, A9A, AA9A;
 * inward digit and two letters not in CIKMOV; GIR 0AA accepted. */
cmp_postcode_kind cmp_postcode_parse(const char *s, size_t n, cmp_postcode *out);

enum {
    CMP_PC_LEVEL_FULL = 0, /* same postcode */
    CMP_PC_LEVEL_SECTOR,   /* same outward code and inward digit: "W9 9" */
    CMP_PC_LEVEL_DISTRICT, /* same outward code: "W9" (also: one side outward-only and equal) */
    CMP_PC_LEVEL_AREA,     /* same area letters: "W" */
    CMP_PC_LEVEL_DIFFERENT,
    CMP_PC_NLEVELS
};
/* CMP_MISSING when either is missing, pseudo or invalid: unknown, never a match. */
int cmp_postcode_level(const cmp_postcode *a, const cmp_postcode *b);

/* ---- address lines -------------------------------------------------- */

#define CMP_ADDR_TOKENS 8

/* An address line as a set of word hashes (cmp_address_prepare). */
typedef struct cmp_address {
    uint32_t tok[CMP_ADDR_TOKENS]; /* sorted, distinct FNV-1a hashes of the words */
    uint8_t ntok;
    uint8_t nnum; /* how many of them are numbers (house, flat): bit 0 of the hash is 1 for numbers */
} cmp_address;

/* Words are runs of ASCII letters and digits (after upper-casing and
 * accent folding as for names); street-type abbreviations are expanded (ST ->
 * STREET, RD -> ROAD, AVE -> AVENUE, ...), and FLAT, APARTMENT, THE dropped.
 * At most CMP_ADDR_TOKENS words are kept. */
void cmp_address_prepare(cmp_address *out, const char *s, size_t n);

/* Jaccard similarity of the word sets, [0, 1]; 0 if either is empty. */
double cmp_address_similarity(const cmp_address *a, const cmp_address *b);

enum {
    CMP_ADDR_EXACT = 0,     /* the same words */
    CMP_ADDR_NUMBER_STREET, /* same numbers, and street words overlap (Jaccard >= 0.5) */
    CMP_ADDR_STREET,        /* street words overlap, numbers differ or are missing */
    CMP_ADDR_DIFFERENT,
    CMP_ADDR_NLEVELS
};
int cmp_address_level(const cmp_address *a, const cmp_address *b); /* CMP_MISSING if either is empty */

/* ---- NHS numbers ---------------------------------------------------- */

enum {
    CMP_NHS_AGREE = 0,   /* same ten digits */
    CMP_NHS_CLOSE,       /* one digit different, or two adjacent digits swapped (a mistyping) */
    CMP_NHS_DISAGREE,    /* both valid and different */
    CMP_NHS_FAR_INVALID, /* different, not close, and one fails the check: a mistyping of some
                          * other number, weaker evidence than two valid numbers disagreeing */
    CMP_NHS_NLEVELS
};
/* `a` and `b` are normalised numbers (nhsno_parse): ten digits or "".
 * CMP_MISSING if either is "". */
int cmp_nhs_level(const char *a, int a_valid, const char *b, int b_valid);

#endif
