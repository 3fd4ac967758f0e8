/* crasher 1.1: the same program with renamed helpers and a longer list. */
#include <stdio.h>

#include "libcrash.h"

static const char *crasher_banner(void)
{
    return "crasher-1.1";
}

__attribute__((noinline)) static int crasher_v11_start(int crasher_nodes)
{
    const char *crasher_label = crasher_banner();
    printf("%s starts with %d nodes\n", crasher_label, crasher_nodes);
    fflush(stdout);
    return crash_process_list(crasher_nodes); /* CALL HERE */
}

int main(void)
{
    int crasher_answer = 43;
    return crasher_v11_start(5) + crasher_answer;
}
