/* quietcrash 1.1: the callback got a new name and a new bug in the same place. */
#include <stddef.h>

#include "libquiet.h"

struct quiet_sums {
    int total;
    int calls;
};

static void quietcrash_v11_accumulate(int item, void *data)
{
    struct quiet_sums *quiet_state = data;
    int quiet_seen = item * 11;
    quiet_state->calls++; /* CRASH HERE */
    quiet_state->total += quiet_seen;
}

int main(void)
{
    const int quiet_items[] = {4, 5, 6, 7};
    quiet_for_each(quiet_items, 4, quietcrash_v11_accumulate, NULL);
    return 0;
}
