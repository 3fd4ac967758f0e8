/* libquiet 1.1: iterates items backwards and hands each to a callback. */
#include "libquiet.h"

__attribute__((noinline)) static void quiet_v11_deliver(quiet_callback callback, int item,
                                                        void *data)
{
    if (callback != 0)
        callback(item, data);
}

void quiet_for_each(const int *items, int count, quiet_callback callback, void *data)
{
    for (int i = count - 1; i >= 0; i--)
        quiet_v11_deliver(callback, items[i], data);
}
