/* quietcrash 1.0: its callback, called from libquiet, writes through a NULL pointer. */
#include <stddef.h>

#include "libquiet.h"

static void quietcrash_v10_on_item(int item, void *data)
{
    int quiet_seen = item * 10;
    int *quiet_total = data;
    *quiet_total += quiet_seen; /* CRASH HERE */
}

int main(void)
{
    const int quiet_items[] = {1, 2, 3};
    quiet_for_each(quiet_items, 3, quietcrash_v10_on_item, NULL);
    return 0;
}
