/* libquiet 1.0: iterates items and hands each to a callback. */
#include "libquiet.h"

__attribute__((noinline)) static void quiet_v10_dispatch(quiet_callback callback, int item,
                                                         void *data)
{
    callback(item, data);
}

void quiet_for_each(const int *items, int count, quiet_callback callback, void *data)
{
    for (int i = 0; i < count; i++)
        quiet_v10_dispatch(callback, items[i], data);
}
