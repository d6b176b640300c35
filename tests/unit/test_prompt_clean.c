/* Prompt cleaning (models/text/prompt_clean.h): each ftfy-style fix, the double HTML unescape and
 * its interplay with ftfy's "auto" unescape, white space, and what the text encoder then sees. The
 * expected strings are what Wan2.1's whitespace_clean(basic_clean(text)) gives with ftfy 6. */
#include <stdlib.h>
#include <string.h>

#include "models/text/prompt_clean.h"
#include "tests/unit/test.h"

static void pd_check_clean(const char *in, size_t len, const char *want) {
    char *got = NULL;
    size_t n = 0;
    PD_CHECK_OK(pd_prompt_clean(in, len, &got, &n));
    PD_CHECK_MSG(got && !strcmp(got, want) && n == strlen(want), "clean(\"%s\") = \"%s\", want \"%s\"", in,
                 got ? got : "(null)", want);
    free(got);
}
#define CLEAN(in, want) pd_check_clean(in, sizeof(in) - 1, want)

static void test_whitespace(void) {
    CLEAN("  a  red\tfox\n\nin snow  ", "a red fox in snow");
    CLEAN("line1\r\nline2\xE2\x80\xA8line3\xC2\xA0\xE2\x80\x83" "end", "line1 line2 line3 end");
    CLEAN("", "");
    CLEAN(" \t\n ", "");
    CLEAN("\xE3\x80\x80x\xE3\x80\x80", "x"); /* ideographic spaces */
}

static void test_html(void) {
    CLEAN("Tom &amp; Jerry", "Tom & Jerry");
    /* no '<': ftfy unescapes once, then html.unescape twice */
    CLEAN("&amp;amp;amp;", "&");
    CLEAN("&amp;lt;b&amp;gt;", "<b>");
    /* with '<' only the two html.unescape passes run */
    CLEAN("< &amp;amp;amp;", "< &amp;");
    /* curly quotes from entities: straightened only when ftfy unescaped them (no '<') */
    CLEAN("&#8220;hi&#8221;", "\"hi\"");
    CLEAN("<b> &#8220;hi&#8221;", "<b> \xE2\x80\x9Chi\xE2\x80\x9D");
    CLEAN("&eacute &copy; &ndash;", "\xC3\xA9 \xC2\xA9 \xE2\x80\x93");
    CLEAN("&nosuch; &ampx &#xZ", "&nosuch; &x &#xZ");
    CLEAN("&#150;&#0;a&#x1F;b&#xD800;", "\xE2\x80\x93\xEF\xBF\xBD" "ab\xEF\xBF\xBD");
    CLEAN("&#99999999999999999999;", "\xEF\xBF\xBD");
}

static void test_ftfy_fixes(void) {
    CLEAN("caf\xC3\x83\xC2\xA9 au lait", "caf\xC3\xA9 au lait");      /* mojibake "cafÃ©" */
    CLEAN("it\xC3\xA2\xE2\x82\xAC\xE2\x84\xA2s", "it's");               /* "itâ€™s" -> it's -> straight */
    CLEAN("\xE2\x80\x9Cquoted\xE2\x80\x9D \xE2\x80\x98x\xE2\x80\x99", "\"quoted\" 'x'");
    CLEAN("\xC2\x93" "c1\xC2\x94", "\"c1\"");                           /* C1 controls read as cp1252 */
    CLEAN("\xEF\xAC\x81sh \xEF\xAC\x82ower \xEF\xAC\x83", "fish flower ffi"); /* ligatures */
    CLEAN("\xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3\xEF\xBC\x8C\xEF\xBC\x91\xEF\xBC\x92", "ABC,12"); /* fullwidth */
    CLEAN("\xE4\xB8\x80\xE5\x8F\xAA\xE7\x8B\x90\xE7\x8B\xB8\xEF\xBC\x8C\xE5\x9C\xA8\xE9\x9B\xAA\xE5\x9C\xB0\xE9\x87\x8C\xE3\x80\x82",
          "\xE4\xB8\x80\xE5\x8F\xAA\xE7\x8B\x90\xE7\x8B\xB8,\xE5\x9C\xA8\xE9\x9B\xAA\xE5\x9C\xB0\xE9\x87\x8C\xE3\x80\x82");
    CLEAN("\x1B[31mred\x1B[0m fox", "red fox");                         /* terminal escapes */
    CLEAN("a\x01" "b\x7F" "c\xEF\xBB\xBF" "d\x0B" "e", "abcde");        /* control characters, BOM */
    CLEAN("\xFF" "ok\xC3", "\xEF\xBF\xBDok\xEF\xBF\xBD");               /* bytes that are not UTF-8 */
    /* an embedded NUL is a control character: removed, the rest kept */
    pd_check_clean("a\0b", 3, "ab");
    /* text that needs nothing is unchanged */
    CLEAN("A cat, 3 dogs (and a bird): 100% real!", "A cat, 3 dogs (and a bird): 100% real!");
}

int main(void) {
    PD_RUN(test_whitespace);
    PD_RUN(test_html);
    PD_RUN(test_ftfy_fixes);
    return pd_test_summary();
}
