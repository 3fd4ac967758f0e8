/* hostile 1.1: every string its core carries tries to become markup, a link or a
 * terminal command, so the pages that show a retrace can prove they keep it inert.
 * It renames itself (the core's process name; gdb shows no thread name for a
 * core), keeps hostile locals and fails an assert whose message (glibc's
 * __abort_msg) holds a script tag. */
#include <assert.h>
#include <stddef.h>
#include <sys/prctl.h>

static void hostile_v11_draw(const char *markup, const char *link)
{
    const char *hostile_escape = "\x1b]0;owned\x07\x1b[2J\x1b[31mred-terminal";
    const char *hostile_image = "<img src=x onerror=alert(3)>";
    int hostile_ok = markup == NULL && link == NULL && hostile_escape == hostile_image;
    assert(hostile_ok && "<script>alert(2)</script>"); /* CRASH HERE */
}

int main(void)
{
    prctl(PR_SET_NAME, "<script>alert(1", 0, 0, 0);
    hostile_v11_draw("<script>alert(1)</script>", "javascript:alert(document.domain)");
    return 0;
}
