/*
 * compare.c — field comparators for record linkage (see compare.h for the
 * contract of each function and docs/registry.md for the levels).
 *
 * Algorithms and where they are specified:
 *   - Jaro: M. A. Jaro, "Advances in record-linkage methodology as applied to
 *     matching the 1985 census of Tampa, Florida", JASA 84 (1989) 414-420.
 *     Transpositions are counted as in Winkler's strcmp95 reference code:
 *     the number of matched characters out of order, halved by integer
 *     division.
 *   - Jaro-Winkler: W. E. Winkler, "String comparator metrics and enhanced
 *     decision rules in the Fellegi-Sunter model of record linkage",
 *     Proc. Section on Survey Research Methods, ASA (1990) 354-359: prefix
 *     scale 0.1, at most 4 characters, applied above a Jaro of 0.7.
 *   - Soundex: US National Archives and Records Administration, "The Soundex
 *     Indexing System" (2007): letters coded 1-6, vowels and Y separate equal
 *     codes, H and W do not, a letter with the first letter's code after it
 *     is not coded again.
 *   - NYSIIS: R. L. Taft, "Name Search Techniques", New York State
 *     Identification and Intelligence System, Special Report No. 1 (1970),
 *     the procedure as restated in the literature (steps 1-9: prefix and
 *     suffix rewrites, a left-to-right scan that rewrites the name in place,
 *     then the S / AY / A endings); the key is not truncated here.
 *   - UK postcodes: the structure in BS 7666 / Royal Mail's PAF: outward code
 *     (area letters, district), inward code (sector digit, unit letters);
 *     NHS pseudo-postcodes ZZ99 (NHS Data Dictionary "Postcode of usual
 *     address": ZZ99 3VZ no fixed abode, ZZ99 3WZ not known, ZZ99 nXX
 *     countries abroad).
 *
 * Invariants: no global mutable state; the diminutives table is sorted by
 * its first column (a unit test checks it) and searched with bsearch.
 */
#include "compare.h"

#include <stdlib.h>
#include <string.h>

/* ---- UTF-8 Latin letters folded to ASCII ---------------------------- */

/* U+00C0..U+00FF: what each letter folds to; "" for the two symbols. */
static const char *const latin1_fold[64] = {
    "A", "A", "A", "A", "A", "A", "AE", "C", "E", "E", "E", "E", "I", "I", "I",  "I",
    "D", "N", "O", "O", "O", "O", "O",  "",  "O", "U", "U", "U", "U", "Y", "TH", "SS",
    "A", "A", "A", "A", "A", "A", "AE", "C", "E", "E", "E", "E", "I", "I", "I",  "I",
    "D", "N", "O", "O", "O", "O", "O",  "",  "O", "U", "U", "U", "U", "Y", "TH", "Y",
};

/* U+0100..U+017F (Latin Extended-A) as ranges. */
static const struct {
    unsigned short lo, hi;
    const char *to;
} latin_ext_fold[] = {
    {0x100, 0x105, "A"}, {0x106, 0x10D, "C"}, {0x10E, 0x111, "D"},  {0x112, 0x11B, "E"},  {0x11C, 0x123, "G"},
    {0x124, 0x127, "H"}, {0x128, 0x131, "I"}, {0x132, 0x133, "IJ"}, {0x134, 0x135, "J"},  {0x136, 0x138, "K"},
    {0x139, 0x142, "L"}, {0x143, 0x14B, "N"}, {0x14C, 0x151, "O"},  {0x152, 0x153, "OE"}, {0x154, 0x159, "R"},
    {0x15A, 0x161, "S"}, {0x162, 0x167, "T"}, {0x168, 0x173, "U"},  {0x174, 0x175, "W"},  {0x176, 0x178, "Y"},
    {0x179, 0x17E, "Z"}, {0x17F, 0x17F, "S"},
};

/* Decode one UTF-8 character at s[*i] (advancing *i); -1 for an invalid
 * sequence (one byte consumed). */
static long utf8_next(const unsigned char *s, size_t n, size_t *i) {
    unsigned char c = s[*i];
    if (c < 0x80) {
        (*i)++;
        return c;
    }
    int len;
    long cp;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, cp = c & 0x07;
    else {
        (*i)++;
        return -1;
    }
    if (*i + (size_t)len > n) {
        (*i)++;
        return -1;
    }
    for (int k = 1; k < len; k++) {
        unsigned char cc = s[*i + (size_t)k];
        if ((cc & 0xC0) != 0x80) {
            (*i)++;
            return -1;
        }
        cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
        (*i)++;
        return -1;
    }
    *i += (size_t)len;
    return cp;
}

/* Classes of a character for names and addresses. */
enum { CH_LETTERS, CH_DIGIT, CH_DROP, CH_BREAK };

/* Classify code point `cp`; for CH_LETTERS put the upper-case ASCII
 * letters it folds to in `*to` (a static string, or `one` for ASCII). */
static int fold_char(long cp, const char **to, char one[2]) {
    if (cp >= 'a' && cp <= 'z') cp -= 32;
    if (cp >= 'A' && cp <= 'Z') {
        one[0] = (char)cp;
        one[1] = 0;
        *to = one;
        return CH_LETTERS;
    }
    if (cp >= '0' && cp <= '9') {
        one[0] = (char)cp;
        one[1] = 0;
        *to = one;
        return CH_DIGIT;
    }
    /* apostrophes: ' ` U+00B4 U+2018 U+2019 U+02BC */
    if (cp == '\'' || cp == '`' || cp == 0xB4 || cp == 0x2018 || cp == 0x2019 || cp == 0x2BC) return CH_DROP;
    if (cp >= 0xC0 && cp <= 0xFF) {
        *to = latin1_fold[cp - 0xC0];
        return (*to)[0] ? CH_LETTERS : CH_BREAK;
    }
    if (cp >= 0x100 && cp <= 0x17F) {
        for (size_t k = 0; k < sizeof latin_ext_fold / sizeof latin_ext_fold[0]; k++)
            if (cp >= latin_ext_fold[k].lo && cp <= latin_ext_fold[k].hi) {
                *to = latin_ext_fold[k].to;
                return CH_LETTERS;
            }
    }
    return CH_BREAK;
}

/* ---- Jaro, Jaro-Winkler --------------------------------------------- */

double cmp_jaro(const char *a, size_t an, const char *b, size_t bn) {
    if (an == 0 && bn == 0) return 1.0;
    if (an == 0 || bn == 0) return 0.0;
    unsigned char stack_flags[512];
    unsigned char *af = stack_flags, *bf;
    if (an + bn > sizeof stack_flags) {
        af = calloc(an + bn, 1);
        if (!af) return 0.0;
    } else {
        memset(af, 0, an + bn);
    }
    bf = af + an;
    size_t longer = an > bn ? an : bn;
    size_t window = longer / 2 > 0 ? longer / 2 - 1 : 0;
    size_t m = 0;
    for (size_t i = 0; i < an; i++) {
        size_t lo = i > window ? i - window : 0;
        size_t hi = i + window + 1 < bn ? i + window + 1 : bn;
        for (size_t j = lo; j < hi; j++)
            if (!bf[j] && a[i] == b[j]) {
                af[i] = bf[j] = 1;
                m++;
                break;
            }
    }
    double sim = 0.0;
    if (m > 0) {
        size_t t = 0, k = 0;
        for (size_t i = 0; i < an; i++) {
            if (!af[i]) continue;
            while (!bf[k])
                k++;
            if (a[i] != b[k]) t++;
            k++;
        }
        t /= 2;
        double md = (double)m;
        sim = (md / (double)an + md / (double)bn + (md - (double)t) / md) / 3.0;
    }
    if (af != stack_flags) free(af);
    return sim;
}

double cmp_jaro_winkler(const char *a, size_t an, const char *b, size_t bn) {
    double j = cmp_jaro(a, an, b, bn);
    if (j <= 0.7) return j;
    size_t l = 0;
    while (l < 4 && l < an && l < bn && a[l] == b[l])
        l++;
    return j + (double)l * 0.1 * (1.0 - j);
}

/* ---- Soundex -------------------------------------------------------- */

/* A..Z: '0' vowel-like separator (A E I O U Y), '-' for H and W (no separation). */
static const char soundex_code[26] = {'0', '1', '2', '3', '0', '1', '2', '-', '0', '2', '2', '4', '5',
                                      '5', '0', '1', '2', '6', '2', '3', '0', '1', '-', '2', '0', '2'};

static int upper_letter(unsigned char c) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if (c >= 'A' && c <= 'Z') return c;
    return 0;
}

size_t cmp_soundex(const char *s, size_t n, char out[5]) {
    size_t i = 0;
    int first = 0;
    while (i < n && !(first = upper_letter((unsigned char)s[i])))
        i++;
    if (!first) {
        out[0] = 0;
        return 0;
    }
    size_t k = 0;
    out[k++] = (char)first;
    char last = soundex_code[first - 'A'];
    for (i++; i < n && k < 4; i++) {
        int c = upper_letter((unsigned char)s[i]);
        if (!c) continue;
        char code = soundex_code[c - 'A'];
        if (code == '-') continue;
        if (code == '0') {
            last = '0';
            continue;
        }
        if (code != last) out[k++] = code;
        last = code;
    }
    while (k < 4)
        out[k++] = '0';
    out[4] = 0;
    return 4;
}

/* ---- NYSIIS --------------------------------------------------------- */

static int is_vowel(char c) {
    return c == 'A' || c == 'E' || c == 'I' || c == 'O' || c == 'U';
}

static int starts(const char *s, size_t n, const char *p) {
    size_t pn = strlen(p);
    return n >= pn && memcmp(s, p, pn) == 0;
}

static int ends(const char *s, size_t n, const char *p) {
    size_t pn = strlen(p);
    return n >= pn && memcmp(s + n - pn, p, pn) == 0;
}

size_t cmp_nysiis(const char *s, size_t n, char *out, size_t cap) {
    char nm[64];
    size_t L = 0;
    for (size_t i = 0; i < n && L < sizeof nm; i++) {
        int c = upper_letter((unsigned char)s[i]);
        if (c) nm[L++] = (char)c;
    }
    if (cap == 0) return 0;
    out[0] = 0;
    if (L == 0) return 0;
    /* 1: prefixes */
    if (starts(nm, L, "MAC"))
        memcpy(nm, "MCC", 3);
    else if (starts(nm, L, "KN"))
        memcpy(nm, "NN", 2);
    else if (starts(nm, L, "K"))
        nm[0] = 'C';
    else if (starts(nm, L, "PH") || starts(nm, L, "PF"))
        memcpy(nm, "FF", 2);
    else if (starts(nm, L, "SCH"))
        memcpy(nm, "SSS", 3);
    /* 2: suffixes (the last two letters become one) */
    if (ends(nm, L, "EE") || ends(nm, L, "IE")) {
        nm[L - 2] = 'Y';
        L--;
    } else if (ends(nm, L, "DT") || ends(nm, L, "RT") || ends(nm, L, "RD") || ends(nm, L, "NT") ||
               ends(nm, L, "ND")) {
        nm[L - 2] = 'D';
        L--;
    }
    /* 3: the key starts with the first letter */
    char key[64];
    size_t k = 0;
    key[k++] = nm[0];
    /* 4-6: scan from the second letter, rewriting the name in place */
    for (size_t i = 1; i < L; i++) {
        char c = nm[i];
        char next = i + 1 < L ? nm[i + 1] : 0;
        if (is_vowel(c)) {
            if (c == 'E' && next == 'V') {
                nm[i] = 'A';
                nm[i + 1] = 'F';
            } else {
                nm[i] = 'A';
            }
        } else if (c == 'Q') {
            nm[i] = 'G';
        } else if (c == 'Z') {
            nm[i] = 'S';
        } else if (c == 'M') {
            nm[i] = 'N';
        } else if (c == 'K') {
            nm[i] = next == 'N' ? 'N' : 'C';
        } else if (c == 'S' && i + 2 < L && nm[i + 1] == 'C' && nm[i + 2] == 'H') {
            nm[i + 1] = nm[i + 2] = 'S';
        } else if (c == 'P' && next == 'H') {
            nm[i] = nm[i + 1] = 'F';
        } else if (c == 'H') {
            if (!is_vowel(nm[i - 1]) || !is_vowel(next)) nm[i] = nm[i - 1];
        } else if (c == 'W') {
            if (is_vowel(nm[i - 1])) nm[i] = nm[i - 1];
        }
        if (nm[i] != key[k - 1]) key[k++] = nm[i];
    }
    /* 7-9: endings */
    if (k > 1 && key[k - 1] == 'S') k--;
    if (k > 1 && key[k - 2] == 'A' && key[k - 1] == 'Y') key[--k - 1] = 'Y';
    if (k > 1 && key[k - 1] == 'A') k--;
    if (k > cap - 1) k = cap - 1;
    memcpy(out, key, k);
    out[k] = 0;
    return k;
}

/* ---- names ---------------------------------------------------------- */

static const char *const name_titles[] = {"MR",  "MRS", "MS",   "MISS", "MX",   "DR",    "PROF",
                                          "REV", "SIR", "DAME", "LADY", "LORD", "MASTER"};
static const char *const name_suffixes[] = {"JR", "SR", "JNR", "SNR"};

static int word_in(const char *w, size_t n, const char *const *list, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (strlen(list[i]) == n && memcmp(list[i], w, n) == 0) return 1;
    return 0;
}

size_t cmp_name_normalise(const char *s, size_t n, char *out, size_t cap) {
    if (cap == 0) return 0;
    /* words: [start, end) in out; at most 32 kept track of */
    size_t ws[32], we[32];
    int nw = 0;
    size_t len = 0;
    int in_word = 0;
    size_t i = 0;
    const unsigned char *u = (const unsigned char *)(s ? s : "");
    if (!s) n = 0;
    while (i < n) {
        long cp = utf8_next(u, n, &i);
        const char *to = "";
        char one[2];
        int cls = cp < 0 ? CH_BREAK : fold_char(cp, &to, one);
        if (cls == CH_DROP || cls == CH_DIGIT) continue;
        if (cls == CH_BREAK) {
            in_word = 0;
            continue;
        }
        for (const char *t = to; *t; t++) {
            if (!in_word) {
                if (nw == 32) goto done;
                if (len > 0) {
                    if (len + 2 > cap) goto done;
                    out[len++] = ' ';
                }
                ws[nw] = len;
                we[nw] = len;
                nw++;
                in_word = 1;
            }
            if (len + 1 >= cap) goto done;
            out[len++] = *t;
            we[nw - 1] = len;
        }
    }
done:
    if (nw > 0 && we[nw - 1] == ws[nw - 1]) nw--; /* a word started but no letter fitted */
    /* titles off the front, suffixes off the back, while another word remains */
    int first = 0, last = nw;
    while (last - first > 1 && word_in(out + ws[first], we[first] - ws[first], name_titles,
                                       sizeof name_titles / sizeof *name_titles))
        first++;
    while (last - first > 1 && word_in(out + ws[last - 1], we[last - 1] - ws[last - 1], name_suffixes,
                                       sizeof name_suffixes / sizeof *name_suffixes))
        last--;
    if (nw == 0) {
        out[0] = 0;
        return 0;
    }
    size_t b = ws[first], e = we[last - 1];
    memmove(out, out + b, e - b);
    out[e - b] = 0;
    return e - b;
}

void cmp_name_prepare(cmp_name *out, const char *s, size_t n) {
    char tmp[4 * CMP_NAME_MAX];
    size_t tl = cmp_name_normalise(s, n, tmp, sizeof tmp);
    memset(out, 0, sizeof *out);
    size_t k = 0;
    for (size_t i = 0; i < tl && k < CMP_NAME_MAX - 1; i++) {
        if (tmp[i] == ' ') {
            if (k > 0 && k < 64) out->breaks |= (uint64_t)1 << k;
            continue;
        }
        out->s[k++] = tmp[i];
    }
    out->s[k] = 0;
    out->len = (uint8_t)k;
    out->breaks &= k < 64 ? (((uint64_t)1 << k) - 1) : ~(uint64_t)0;
    cmp_soundex(out->s, k, out->soundex);
    cmp_nysiis(out->s, k, out->nysiis, sizeof out->nysiis);
}

/* Diminutives and variants of given names: (variant, canonical), sorted by
 * variant (strcmp order). A general table of English-language usage, not
 * derived from any data set. */
static const struct {
    const char *variant, *canonical;
} given_variants[] = {
    {"ABBEY", "ABIGAIL"},
    {"ABBIE", "ABIGAIL"},
    {"ABBY", "ABIGAIL"},
    {"ABI", "ABIGAIL"},
    {"AL", "ALBERT"},
    {"ALASDAIR", "ALEXANDER"},
    {"ALASTAIR", "ALEXANDER"},
    {"ALBIE", "ALBERT"},
    {"ALEC", "ALEXANDER"},
    {"ALEX", "ALEXANDER"},
    {"ALEX", "ALEXANDRA"},
    {"ALEXA", "ALEXANDRA"},
    {"ALF", "ALFRED"},
    {"ALFIE", "ALFRED"},
    {"ALI", "ALEXANDER"},
    {"ALI", "ALEXANDRA"},
    {"ALISTAIR", "ALEXANDER"},
    {"ANDIE", "ANDREW"},
    {"ANDY", "ANDREW"},
    {"ANN", "ANNE"},
    {"ANNA", "ANNE"},
    {"ANNIE", "ANNE"},
    {"ANT", "ANTHONY"},
    {"ANTON", "ANTHONY"},
    {"ART", "ARTHUR"},
    {"ARTIE", "ARTHUR"},
    {"BABS", "BARBARA"},
    {"BARB", "BARBARA"},
    {"BARBIE", "BARBARA"},
    {"BECCA", "REBECCA"},
    {"BECKIE", "REBECCA"},
    {"BECKY", "REBECCA"},
    {"BELLA", "ISABEL"},
    {"BELLE", "ISABEL"},
    {"BEN", "BENJAMIN"},
    {"BENJI", "BENJAMIN"},
    {"BENJY", "BENJAMIN"},
    {"BENNY", "BENJAMIN"},
    {"BERT", "ALBERT"},
    {"BERT", "ROBERT"},
    {"BERTIE", "ALBERT"},
    {"BESS", "ELIZABETH"},
    {"BESSIE", "ELIZABETH"},
    {"BETH", "ELIZABETH"},
    {"BETSY", "ELIZABETH"},
    {"BETTY", "ELIZABETH"},
    {"BEX", "REBECCA"},
    {"BILL", "WILLIAM"},
    {"BILLY", "WILLIAM"},
    {"BOB", "ROBERT"},
    {"BOBBIE", "ROBERT"},
    {"BOBBY", "ROBERT"},
    {"BRAD", "BRADLEY"},
    {"CAM", "CAMERON"},
    {"CAT", "CATHERINE"},
    {"CATH", "CATHERINE"},
    {"CATHY", "CATHERINE"},
    {"CATRIONA", "CATHERINE"},
    {"CHARLIE", "CHARLES"},
    {"CHARLIE", "CHARLOTTE"},
    {"CHAS", "CHARLES"},
    {"CHAZ", "CHARLES"},
    {"CHRIS", "CHRISTINE"},
    {"CHRIS", "CHRISTOPHER"},
    {"CHRISSIE", "CHRISTINE"},
    {"CHRISTIE", "CHRISTINE"},
    {"CHRISTINA", "CHRISTINE"},
    {"CHUCK", "CHARLES"},
    {"DAI", "DAVID"},
    {"DAN", "DANIEL"},
    {"DANNY", "DANIEL"},
    {"DAVE", "DAVID"},
    {"DAVIE", "DAVID"},
    {"DAVY", "DAVID"},
    {"DEB", "DEBORAH"},
    {"DEBBIE", "DEBORAH"},
    {"DEBBY", "DEBORAH"},
    {"DEBRA", "DEBORAH"},
    {"DICK", "RICHARD"},
    {"DICKIE", "RICHARD"},
    {"DOLLY", "DOROTHY"},
    {"DOROTHEA", "DOROTHY"},
    {"DOT", "DOROTHY"},
    {"DOTTIE", "DOROTHY"},
    {"DOUG", "DOUGLAS"},
    {"DOUGIE", "DOUGLAS"},
    {"DREW", "ANDREW"},
    {"ED", "EDWARD"},
    {"EDDIE", "EDWARD"},
    {"EDDY", "EDWARD"},
    {"ELEANORE", "ELEANOR"},
    {"ELINOR", "ELEANOR"},
    {"ELISE", "ELIZABETH"},
    {"ELIZA", "ELIZABETH"},
    {"ELLA", "ELEANOR"},
    {"ELLIE", "ELEANOR"},
    {"EM", "EMILY"},
    {"EM", "EMMA"},
    {"EMMY", "EMILY"},
    {"EMMY", "EMMA"},
    {"FRAN", "FRANCES"},
    {"FRANK", "FRANCIS"},
    {"FRANKIE", "FRANCES"},
    {"FRANKIE", "FRANCIS"},
    {"FRANNIE", "FRANCES"},
    {"FRED", "ALFRED"},
    {"FRED", "FREDERICK"},
    {"FREDDIE", "ALFRED"},
    {"FREDDIE", "FREDERICK"},
    {"FREDDY", "FREDERICK"},
    {"FRITZ", "FREDERICK"},
    {"GED", "GERALD"},
    {"GEOFF", "GEOFFREY"},
    {"GERRY", "GERALD"},
    {"GILL", "GILLIAN"},
    {"GILLY", "GILLIAN"},
    {"GREG", "GREGORY"},
    {"GRETA", "MARGARET"},
    {"HAL", "HENRY"},
    {"HANK", "HENRY"},
    {"HARRIE", "HARRIET"},
    {"HARRY", "HENRY"},
    {"HATTIE", "HARRIET"},
    {"ISABELLA", "ISABEL"},
    {"ISABELLE", "ISABEL"},
    {"ISOBEL", "ISABEL"},
    {"IZZIE", "ISABEL"},
    {"IZZY", "ISABEL"},
    {"JACK", "JOHN"},
    {"JACKIE", "JACQUELINE"},
    {"JACKY", "JACQUELINE"},
    {"JACQUI", "JACQUELINE"},
    {"JAMIE", "JAMES"},
    {"JEFF", "GEOFFREY"},
    {"JEFFREY", "GEOFFREY"},
    {"JEN", "JENNIFER"},
    {"JENNI", "JENNIFER"},
    {"JENNIE", "JENNIFER"},
    {"JENNY", "JENNIFER"},
    {"JERRY", "GERALD"},
    {"JESS", "JESSICA"},
    {"JESSIE", "JESSICA"},
    {"JILL", "GILLIAN"},
    {"JILLIAN", "GILLIAN"},
    {"JIM", "JAMES"},
    {"JIMMIE", "JAMES"},
    {"JIMMY", "JAMES"},
    {"JO", "JOANNA"},
    {"JO", "JOSEPH"},
    {"JO", "JOSEPHINE"},
    {"JOAN", "JOANNA"},
    {"JOANNE", "JOANNA"},
    {"JOE", "JOSEPH"},
    {"JOEY", "JOSEPH"},
    {"JOHNNIE", "JOHN"},
    {"JOHNNY", "JOHN"},
    {"JON", "JOHN"},
    {"JON", "JONATHAN"},
    {"JONNY", "JOHN"},
    {"JONNY", "JONATHAN"},
    {"JONTY", "JONATHAN"},
    {"JOS", "JOSEPH"},
    {"JOSE", "JOSEPHINE"},
    {"JOSEY", "JOSEPHINE"},
    {"JOSIE", "JOSEPHINE"},
    {"JUDE", "JUDITH"},
    {"JUDY", "JUDITH"},
    {"JULES", "JULIA"},
    {"JULIE", "JULIA"},
    {"JULIET", "JULIA"},
    {"KATE", "CATHERINE"},
    {"KATHERINE", "CATHERINE"},
    {"KATHLEEN", "CATHERINE"},
    {"KATHRYN", "CATHERINE"},
    {"KATHY", "CATHERINE"},
    {"KATIE", "CATHERINE"},
    {"KAY", "CATHERINE"},
    {"KEN", "KENNETH"},
    {"KENNY", "KENNETH"},
    {"KIRSTEN", "CHRISTINE"},
    {"KIRSTY", "CHRISTINE"},
    {"KIT", "CHRISTOPHER"},
    {"KITTY", "CATHERINE"},
    {"KRIS", "CHRISTOPHER"},
    {"LARRY", "LAWRENCE"},
    {"LAURENCE", "LAWRENCE"},
    {"LAURIE", "LAWRENCE"},
    {"LEN", "LEONARD"},
    {"LENNIE", "LEONARD"},
    {"LENNY", "LEONARD"},
    {"LEO", "LEONARD"},
    {"LEXI", "ALEXANDRA"},
    {"LEXIE", "ALEXANDRA"},
    {"LIAM", "WILLIAM"},
    {"LIBBY", "ELIZABETH"},
    {"LIV", "OLIVIA"},
    {"LIVIA", "OLIVIA"},
    {"LIVVY", "OLIVIA"},
    {"LIZ", "ELIZABETH"},
    {"LIZA", "ELIZABETH"},
    {"LIZZIE", "ELIZABETH"},
    {"LIZZY", "ELIZABETH"},
    {"LOL", "LAWRENCE"},
    {"LOTTA", "CHARLOTTE"},
    {"LOTTIE", "CHARLOTTE"},
    {"LOTTY", "CHARLOTTE"},
    {"MADGE", "MARGARET"},
    {"MAE", "MARY"},
    {"MAGGIE", "MARGARET"},
    {"MAGS", "MARGARET"},
    {"MAIRE", "MARY"},
    {"MAIREAD", "MARGARET"},
    {"MAISIE", "MARGARET"},
    {"MAMIE", "MARY"},
    {"MANDA", "AMANDA"},
    {"MANDY", "AMANDA"},
    {"MARGE", "MARGARET"},
    {"MARGIE", "MARGARET"},
    {"MARIA", "MARY"},
    {"MARIE", "MARY"},
    {"MAT", "MATTHEW"},
    {"MATT", "MATTHEW"},
    {"MATTY", "MATTHEW"},
    {"MAURA", "MARY"},
    {"MAY", "MARGARET"},
    {"MAY", "MARY"},
    {"MEG", "MARGARET"},
    {"MEGAN", "MARGARET"},
    {"MICK", "MICHAEL"},
    {"MICKEY", "MICHAEL"},
    {"MICKY", "MICHAEL"},
    {"MIKE", "MICHAEL"},
    {"MIKEY", "MICHAEL"},
    {"MILLIE", "EMILY"},
    {"MITCH", "MICHAEL"},
    {"MOIRA", "MARY"},
    {"MOLLY", "MARY"},
    {"NAN", "ANNE"},
    {"NANCY", "ANNE"},
    {"NAT", "NATALIE"},
    {"NAT", "NATHANIEL"},
    {"NATE", "NATHANIEL"},
    {"NATTIE", "NATALIE"},
    {"NED", "EDWARD"},
    {"NEDDY", "EDWARD"},
    {"NELL", "ELEANOR"},
    {"NELLIE", "ELEANOR"},
    {"NICK", "NICHOLAS"},
    {"NICKY", "NICHOLAS"},
    {"NICKY", "NICOLA"},
    {"NICO", "NICHOLAS"},
    {"NICOLE", "NICOLA"},
    {"NIKKI", "NICOLA"},
    {"NOLL", "OLIVER"},
    {"NORA", "ELEANOR"},
    {"OLLIE", "OLIVER"},
    {"OLLIE", "OLIVIA"},
    {"OLLY", "OLIVER"},
    {"PADDY", "PATRICK"},
    {"PADRAIG", "PATRICK"},
    {"PAM", "PAMELA"},
    {"PAMMY", "PAMELA"},
    {"PAT", "PATRICIA"},
    {"PAT", "PATRICK"},
    {"PATSY", "PATRICIA"},
    {"PATTIE", "PATRICIA"},
    {"PATTY", "PATRICIA"},
    {"PEG", "MARGARET"},
    {"PEGGY", "MARGARET"},
    {"PEN", "PENELOPE"},
    {"PENNY", "PENELOPE"},
    {"PETE", "PETER"},
    {"PHIL", "PHILIP"},
    {"PHILLIP", "PHILIP"},
    {"PIERS", "PETER"},
    {"PIP", "PHILIP"},
    {"POLLY", "MARY"},
    {"RAB", "ROBERT"},
    {"RAY", "RAYMOND"},
    {"REBEKAH", "REBECCA"},
    {"RICH", "RICHARD"},
    {"RICHIE", "RICHARD"},
    {"RICK", "RICHARD"},
    {"RICKIE", "RICHARD"},
    {"RICKY", "RICHARD"},
    {"ROB", "ROBERT"},
    {"ROBBIE", "ROBERT"},
    {"ROBIN", "ROBERT"},
    {"RON", "RONALD"},
    {"RONNIE", "RONALD"},
    {"RONNY", "RONALD"},
    {"SADIE", "SARAH"},
    {"SAL", "SARAH"},
    {"SALLY", "SARAH"},
    {"SAM", "SAMANTHA"},
    {"SAM", "SAMUEL"},
    {"SAMMIE", "SAMANTHA"},
    {"SAMMIE", "SAMUEL"},
    {"SAMMY", "SAMANTHA"},
    {"SAMMY", "SAMUEL"},
    {"SANDRA", "ALEXANDRA"},
    {"SANDY", "ALEXANDER"},
    {"SANDY", "ALEXANDRA"},
    {"SARA", "SARAH"},
    {"STEFAN", "STEPHEN"},
    {"STEPHAN", "STEPHEN"},
    {"STEVE", "STEPHEN"},
    {"STEVEN", "STEPHEN"},
    {"STEVIE", "STEPHEN"},
    {"SUE", "SUSAN"},
    {"SUKIE", "SUSAN"},
    {"SUSANNAH", "SUSAN"},
    {"SUSIE", "SUSAN"},
    {"SUZANNE", "SUSAN"},
    {"SUZY", "SUSAN"},
    {"TALLY", "NATALIE"},
    {"TAM", "THOMAS"},
    {"TED", "EDWARD"},
    {"TED", "THEODORE"},
    {"TEDDY", "EDWARD"},
    {"TEDDY", "THEODORE"},
    {"TERESA", "THERESA"},
    {"TERRI", "THERESA"},
    {"TERRY", "THERESA"},
    {"TESS", "THERESA"},
    {"TESSA", "THERESA"},
    {"THEO", "THEODORE"},
    {"THOM", "THOMAS"},
    {"TIM", "TIMOTHY"},
    {"TIMMY", "TIMOTHY"},
    {"TINA", "CHRISTINE"},
    {"TOM", "THOMAS"},
    {"TOMMY", "THOMAS"},
    {"TONY", "ANTHONY"},
    {"TOPHER", "CHRISTOPHER"},
    {"TORI", "VICTORIA"},
    {"TORY", "VICTORIA"},
    {"TRICIA", "PATRICIA"},
    {"TRISH", "PATRICIA"},
    {"VAL", "VALERIE"},
    {"VIC", "VICTORIA"},
    {"VICKI", "VICTORIA"},
    {"VICKY", "VICTORIA"},
    {"VIKKI", "VICTORIA"},
    {"WILF", "WILLIAM"},
    {"WILL", "WILLIAM"},
    {"WILLIE", "WILLIAM"},
    {"WILLY", "WILLIAM"},
    {"XANDER", "ALEXANDER"},
    {"ZAC", "ZACHARY"},
    {"ZACH", "ZACHARY"},
    {"ZACK", "ZACHARY"},
    {"ZAK", "ZACHARY"},
};

static int variant_cmp(const void *k, const void *e) {
    const char *key = k;
    const char *v = *(const char *const *)e;
    return strcmp(key, v);
}

/* Canonical forms of `name` (NUL-terminated): itself and every canonical
 * it is a variant of. Returns the count (at most `max`). */
static int canonicals(const char *name, const char **out, int max) {
    int k = 0;
    out[k++] = name;
    size_t count = sizeof given_variants / sizeof given_variants[0];
    const void *hit = bsearch(name, given_variants, count, sizeof given_variants[0], variant_cmp);
    if (!hit) return k;
    size_t at = (size_t)((const char *)hit - (const char *)given_variants) / sizeof given_variants[0];
    while (at > 0 && strcmp(given_variants[at - 1].variant, name) == 0)
        at--;
    for (; at < count && strcmp(given_variants[at].variant, name) == 0 && k < max; at++)
        out[k++] = given_variants[at].canonical;
    return k;
}

int cmp_given_variant(const char *a, size_t an, const char *b, size_t bn) {
    char x[CMP_NAME_MAX], y[CMP_NAME_MAX];
    if (an == 0 || bn == 0 || an >= sizeof x || bn >= sizeof y) return 0;
    memcpy(x, a, an);
    x[an] = 0;
    memcpy(y, b, bn);
    y[bn] = 0;
    const char *ca[8], *cb[8];
    int na = canonicals(x, ca, 8), nb = canonicals(y, cb, 8);
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++)
            if (strcmp(ca[i], cb[j]) == 0) return 1;
    return 0;
}

/* 1 if a whole word of `a` equals a whole word of `b` (multi-word names). */
static int share_word(const cmp_name *a, const cmp_name *b) {
    if (!a->breaks && !b->breaks) return 0;
    size_t as = 0;
    while (as < a->len) {
        size_t ae = as + 1;
        while (ae < a->len && !(a->breaks >> ae & 1))
            ae++;
        size_t bs = 0;
        while (bs < b->len) {
            size_t be = bs + 1;
            while (be < b->len && !(b->breaks >> be & 1))
                be++;
            if (ae - as == be - bs && ae - as >= 2 && memcmp(a->s + as, b->s + bs, ae - as) == 0) return 1;
            bs = be;
        }
        as = ae;
    }
    return 0;
}

int cmp_name_level(const cmp_name *a, const cmp_name *b, int given) {
    if (a->len == 0 || b->len == 0) return CMP_MISSING;
    if (a->len == b->len && memcmp(a->s, b->s, a->len) == 0) return CMP_NAME_EXACT;
    double jw = cmp_jaro_winkler(a->s, a->len, b->s, b->len);
    if (jw >= CMP_NAME_JW_HIGH_MIN) return CMP_NAME_JW_HIGH;
    if (jw >= CMP_NAME_JW_MID_MIN) return CMP_NAME_JW_MID;
    /* prepared codes are zero-padded to their full size: compare them whole */
    if (memcmp(a->soundex, b->soundex, sizeof a->soundex) == 0 ||
        memcmp(a->nysiis, b->nysiis, sizeof a->nysiis) == 0)
        return CMP_NAME_VARIANT;
    size_t shorter = a->len < b->len ? a->len : b->len;
    if ((shorter >= 3 || shorter == 1) && memcmp(a->s, b->s, shorter) == 0) return CMP_NAME_VARIANT;
    if (share_word(a, b)) return CMP_NAME_VARIANT;
    if (given && cmp_given_variant(a->s, a->len, b->s, b->len)) return CMP_NAME_VARIANT;
    return CMP_NAME_DIFFERENT;
}

/* ---- dates of birth ------------------------------------------------- */

static int days_in_month(int y, int m) {
    static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
    return dm[m - 1];
}

static int digits(const char *s, size_t n, int *v) {
    int x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        x = x * 10 + (s[i] - '0');
    }
    *v = x;
    return 0;
}

int cmp_date_parse(const char *s, size_t n, cmp_date *out) {
    memset(out, 0, sizeof *out);
    if (!s) return -1;
    while (n > 0 && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    int y = 0, m = 0, d = 0, full = 1;
    if (n == 10 && s[4] == '-' && s[7] == '-') {
        if (digits(s, 4, &y) || digits(s + 5, 2, &m) || digits(s + 8, 2, &d)) return -1;
    } else if (n == 7 && s[4] == '-') {
        if (digits(s, 4, &y) || digits(s + 5, 2, &m) || m == 0) return -1;
        full = 0;
    } else if (n == 4) {
        if (digits(s, 4, &y)) return -1;
        full = 0;
    } else if (n == 10 && s[2] == '/' && s[5] == '/') {
        if (digits(s, 2, &d) || digits(s + 3, 2, &m) || digits(s + 6, 4, &y)) return -1;
    } else if (n >= 8 && n <= 26) {
        /* YYYYMMDD, optionally followed by an HL7 time and zone */
        if (digits(s, 4, &y) || digits(s + 4, 2, &m) || digits(s + 6, 2, &d)) return -1;
        for (size_t i = 8; i < n; i++)
            if (!((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '+' || s[i] == '-')) return -1;
    } else {
        return -1;
    }
    if (y < 1800 || y > 2200) return -1;
    if (full && (m == 0 || d == 0)) return -1;
    if (m > 12 || (d != 0 && d > days_in_month(y, m))) return -1;
    out->y = (int16_t)y;
    out->m = (int8_t)m;
    out->d = (int8_t)d;
    return 0;
}

/* Days since 1 March of year 0 (proleptic Gregorian): only differences are used. */
static long day_number(cmp_date x) {
    long y = x.y, m = x.m;
    if (m <= 2) y--, m += 12;
    return 365 * y + y / 4 - y / 100 + y / 400 + (153 * (m - 3) + 2) / 5 + x.d;
}

int cmp_dob_level(cmp_date a, cmp_date b) {
    if (a.y == 0 || b.y == 0) return CMP_MISSING;
    int full = a.m && a.d && b.m && b.d;
    if (!full) {
        if (a.y != b.y) return CMP_DOB_DIFFERENT;
        if (a.m && b.m && a.m != b.m) return CMP_DOB_DIFFERENT;
        if (a.d && b.d && a.d != b.d) return CMP_DOB_DIFFERENT;
        return CMP_DOB_PARTIAL;
    }
    int dy = a.y != b.y, dm = a.m != b.m, dd = a.d != b.d;
    if (!dy && !dm && !dd) return CMP_DOB_EXACT;
    if (!dy && a.d == b.m && a.m == b.d) return CMP_DOB_TRANSPOSED;
    if (dy + dm + dd == 1 || labs(day_number(a) - day_number(b)) == 1) return CMP_DOB_ONE_OFF;
    return CMP_DOB_DIFFERENT;
}

/* ---- sex ------------------------------------------------------------ */

static const struct {
    const char *text;
    cmp_sex sex;
} sex_words[] = {
    {"m", CMP_SEX_MALE},   {"male", CMP_SEX_MALE},     {"1", CMP_SEX_MALE},
    {"f", CMP_SEX_FEMALE}, {"female", CMP_SEX_FEMALE}, {"2", CMP_SEX_FEMALE},
    {"o", CMP_SEX_OTHER},  {"other", CMP_SEX_OTHER},   {"indeterminate", CMP_SEX_OTHER},
};

cmp_sex cmp_sex_parse(const char *s, size_t n) {
    if (!s) return CMP_SEX_UNKNOWN;
    while (n > 0 && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    for (size_t i = 0; i < sizeof sex_words / sizeof sex_words[0]; i++) {
        const char *t = sex_words[i].text;
        size_t tn = strlen(t);
        if (tn != n) continue;
        size_t k = 0;
        while (k < n && (s[k] | 0x20) == t[k])
            k++;
        if (k == n) return sex_words[i].sex;
    }
    return CMP_SEX_UNKNOWN;
}

int cmp_sex_level(cmp_sex a, cmp_sex b) {
    if (a == CMP_SEX_UNKNOWN || b == CMP_SEX_UNKNOWN) return CMP_MISSING;
    return a == b ? CMP_SEX_SAME : CMP_SEX_DIFFERENT;
}

/* ---- postcodes ------------------------------------------------------ */

static int is_alpha(char c) {
    return c >= 'A' && c <= 'Z';
}
static int is_digit(char c) {
    return c >= '0' && c <= '9';
}

/* 1 if s[0..n) is a well-formed outward code; sets *area to its letters. */
static int outward_ok(const char *s, size_t n, size_t *area) {
    if (n < 2 || n > 4 || !is_alpha(s[0]) || strchr("QVX", s[0])) return 0;
    size_t a = 1;
    if (is_alpha(s[1])) {
        if (strchr("IJZ", s[1])) return 0;
        a = 2;
    }
    *area = a;
    if (a >= n || !is_digit(s[a])) return 0;
    size_t rest = n - a - 1; /* after the first district digit */
    if (rest == 0) return 1;
    if (rest > 1) return 0;
    char c = s[a + 1];
    if (is_digit(c)) return 1;
    if (a == 1) return strchr("ABCDEFGHJKPSTUW", c) != NULL;
    return strchr("ABEHMNPRVWXY", c) != NULL;
}

cmp_postcode_kind cmp_postcode_parse(const char *s, size_t n, cmp_postcode *out) {
    memset(out, 0, sizeof *out);
    char c[16];
    size_t k = 0;
    for (size_t i = 0; s && i < n; i++) {
        char ch = s[i];
        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') continue;
        if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 32);
        if (!is_alpha(ch) && !is_digit(ch)) return (cmp_postcode_kind)(out->kind = CMP_PC_INVALID);
        if (k == sizeof c - 1) return (cmp_postcode_kind)(out->kind = CMP_PC_INVALID);
        c[k++] = ch;
    }
    c[k] = 0;
    if (k == 0) return (cmp_postcode_kind)(out->kind = CMP_PC_MISSING);
    if (k >= 4 && memcmp(c, "ZZ99", 4) == 0) return (cmp_postcode_kind)(out->kind = CMP_PC_PSEUDO);
    if (k == 6 && memcmp(c, "GIR0AA", 6) == 0) {
        memcpy(out->pc, "GIR 0AA", 8);
        out->outlen = 3;
        out->arealen = 3;
        return (cmp_postcode_kind)(out->kind = CMP_PC_FULL);
    }
    size_t area;
    if (k >= 5 && k <= 7 && is_digit(c[k - 3]) && is_alpha(c[k - 2]) && is_alpha(c[k - 1]) &&
        !strchr("CIKMOV", c[k - 2]) && !strchr("CIKMOV", c[k - 1]) && outward_ok(c, k - 3, &area)) {
        memcpy(out->pc, c, k - 3);
        out->pc[k - 3] = ' ';
        memcpy(out->pc + k - 2, c + k - 3, 3);
        out->pc[k + 1] = 0;
        out->outlen = (uint8_t)(k - 3);
        out->arealen = (uint8_t)area;
        return (cmp_postcode_kind)(out->kind = CMP_PC_FULL);
    }
    if (outward_ok(c, k, &area)) {
        memcpy(out->pc, c, k + 1);
        out->outlen = (uint8_t)k;
        out->arealen = (uint8_t)area;
        return (cmp_postcode_kind)(out->kind = CMP_PC_OUTWARD);
    }
    return (cmp_postcode_kind)(out->kind = CMP_PC_INVALID);
}

int cmp_postcode_level(const cmp_postcode *a, const cmp_postcode *b) {
    int ak = a->kind, bk = b->kind;
    if ((ak != CMP_PC_FULL && ak != CMP_PC_OUTWARD) || (bk != CMP_PC_FULL && bk != CMP_PC_OUTWARD))
        return CMP_MISSING;
    int same_out = a->outlen == b->outlen && memcmp(a->pc, b->pc, a->outlen) == 0;
    if (ak == CMP_PC_FULL && bk == CMP_PC_FULL && same_out) {
        if (strcmp(a->pc, b->pc) == 0) return CMP_PC_LEVEL_FULL;
        if (a->pc[a->outlen + 1] == b->pc[b->outlen + 1]) return CMP_PC_LEVEL_SECTOR;
        return CMP_PC_LEVEL_DISTRICT;
    }
    if (same_out) return CMP_PC_LEVEL_DISTRICT;
    if (a->arealen == b->arealen && memcmp(a->pc, b->pc, a->arealen) == 0) return CMP_PC_LEVEL_AREA;
    return CMP_PC_LEVEL_DIFFERENT;
}

/* ---- addresses ------------------------------------------------------ */

static const struct {
    const char *abbr, *full;
} street_abbrev[] = {
    {"AVE", "AVENUE"},   {"AV", "AVENUE"},    {"CL", "CLOSE"},  {"CRES", "CRESCENT"}, {"CT", "COURT"},
    {"DR", "DRIVE"},     {"GDNS", "GARDENS"}, {"GRN", "GREEN"}, {"GR", "GROVE"},      {"GRO", "GROVE"},
    {"HSE", "HOUSE"},    {"LN", "LANE"},      {"MT", "MOUNT"},  {"PDE", "PARADE"},    {"PK", "PARK"},
    {"PL", "PLACE"},     {"RD", "ROAD"},      {"SQ", "SQUARE"}, {"ST", "STREET"},     {"TER", "TERRACE"},
    {"TERR", "TERRACE"}, {"WK", "WALK"},      {"N", "NORTH"},   {"S", "SOUTH"},       {"E", "EAST"},
    {"W", "WEST"},       {"GT", "GREAT"},     {"UPR", "UPPER"}, {"LWR", "LOWER"},
};
static const char *const address_noise[] = {"FLAT", "APARTMENT", "APT", "THE"};

static uint32_t fnv1a(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static int u32_cmp(const void *x, const void *y) {
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? -1 : a > b;
}

static void address_word(cmp_address *out, uint32_t *tmp, size_t *nt, const char *w, size_t n, int number) {
    if (n == 0 || *nt >= CMP_ADDR_TOKENS) return;
    if (!number) {
        if (word_in(w, n, address_noise, sizeof address_noise / sizeof *address_noise)) return;
        for (size_t i = 0; i < sizeof street_abbrev / sizeof street_abbrev[0]; i++)
            if (strlen(street_abbrev[i].abbr) == n && memcmp(street_abbrev[i].abbr, w, n) == 0) {
                w = street_abbrev[i].full;
                n = strlen(w);
                break;
            }
    }
    uint32_t h = fnv1a(w, n);
    h = number ? (h | 1u) : (h & ~1u);
    tmp[(*nt)++] = h;
    (void)out;
}

void cmp_address_prepare(cmp_address *out, const char *s, size_t n) {
    memset(out, 0, sizeof *out);
    uint32_t tmp[CMP_ADDR_TOKENS];
    size_t nt = 0;
    char w[64];
    size_t wl = 0;
    int number = 0;
    size_t i = 0;
    const unsigned char *u = (const unsigned char *)(s ? s : "");
    if (!s) n = 0;
    while (i <= n) {
        int cls = CH_BREAK;
        const char *to = "";
        char one[2];
        if (i < n) {
            long cp = utf8_next(u, n, &i);
            cls = cp < 0 ? CH_BREAK : fold_char(cp, &to, one);
        } else {
            i++;
        }
        if (cls == CH_DROP) continue;
        if (cls == CH_BREAK) {
            address_word(out, tmp, &nt, w, wl, number);
            wl = 0;
            continue;
        }
        if (wl == 0) number = cls == CH_DIGIT;
        for (const char *t = to; *t && wl < sizeof w; t++)
            w[wl++] = *t;
    }
    qsort(tmp, nt, sizeof tmp[0], u32_cmp);
    size_t k = 0;
    for (size_t j = 0; j < nt; j++)
        if (k == 0 || tmp[j] != out->tok[k - 1]) out->tok[k++] = tmp[j];
    out->ntok = (uint8_t)k;
    for (size_t j = 0; j < k; j++)
        out->nnum += out->tok[j] & 1u;
}

/* Sizes of the intersection of two sorted sets, split by the number bit. */
static void address_overlap(const cmp_address *a, const cmp_address *b, int *common_num, int *common_word) {
    size_t i = 0, j = 0;
    *common_num = *common_word = 0;
    while (i < a->ntok && j < b->ntok) {
        if (a->tok[i] == b->tok[j]) {
            if (a->tok[i] & 1u)
                (*common_num)++;
            else
                (*common_word)++;
            i++, j++;
        } else if (a->tok[i] < b->tok[j]) {
            i++;
        } else {
            j++;
        }
    }
}

double cmp_address_similarity(const cmp_address *a, const cmp_address *b) {
    if (a->ntok == 0 || b->ntok == 0) return 0.0;
    int cn, cw;
    address_overlap(a, b, &cn, &cw);
    int inter = cn + cw;
    return (double)inter / (double)(a->ntok + b->ntok - inter);
}

int cmp_address_level(const cmp_address *a, const cmp_address *b) {
    if (a->ntok == 0 || b->ntok == 0) return CMP_MISSING;
    int cn, cw;
    address_overlap(a, b, &cn, &cw);
    if (a->ntok == b->ntok && cn + cw == a->ntok) return CMP_ADDR_EXACT;
    int wa = a->ntok - a->nnum, wb = b->ntok - b->nnum;
    double wj = (wa && wb) ? (double)cw / (double)(wa + wb - cw) : 0.0;
    int same_numbers = a->nnum > 0 && a->nnum == b->nnum && cn == a->nnum;
    if (same_numbers && wj >= 0.5) return CMP_ADDR_NUMBER_STREET;
    if (wj >= 0.5) return CMP_ADDR_STREET;
    return CMP_ADDR_DIFFERENT;
}

/* ---- NHS numbers ---------------------------------------------------- */

int cmp_nhs_level(const char *a, int a_valid, const char *b, int b_valid) {
    if (!a[0] || !b[0]) return CMP_MISSING;
    int diff = 0, first = -1, second = -1;
    for (int i = 0; i < 10; i++)
        if (a[i] != b[i]) {
            if (diff == 0)
                first = i;
            else if (diff == 1)
                second = i;
            diff++;
        }
    if (diff == 0) return CMP_NHS_AGREE;
    if (diff == 1) return CMP_NHS_CLOSE;
    if (diff == 2 && second == first + 1 && a[first] == b[second] && a[second] == b[first])
        return CMP_NHS_CLOSE;
    return a_valid && b_valid ? CMP_NHS_DISAGREE : CMP_NHS_FAR_INVALID;
}
