/* The public interface of libcrash; it is the same in every version. */
#ifndef LIBCRASH_H
#define LIBCRASH_H

/* Walks a list of `length` nodes, one too far: it always crashes. */
int crash_process_list(int length);

#endif
