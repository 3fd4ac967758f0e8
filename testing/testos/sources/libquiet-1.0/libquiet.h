/* libquiet calls back into its user for every item; its debuginfo is never published. */
#ifndef LIBQUIET_H
#define LIBQUIET_H

typedef void (*quiet_callback)(int item, void *data);

void quiet_for_each(const int *items, int count, quiet_callback callback, void *data);

#endif
