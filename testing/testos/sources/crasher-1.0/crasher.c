/* crasher 1.0: asks libcrash to process a short list, which crashes in libcrash. */
#include <stdio.h>

#include "libcrash.h"

__attribute__((noinline)) static int crasher_v10_run(int crasher_length)
{
    const char *crasher_label = "crasher-1.0";
    printf("%s processes %d nodes\n", crasher_label, crasher_length);
    fflush(stdout);
    return crash_process_list(crasher_length); /* CALL HERE */
}

int main(void)
{
    int crasher_answer = 42;
    return crasher_v10_run(3) + crasher_answer;
}
