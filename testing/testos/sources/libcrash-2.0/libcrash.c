/* libcrash 2.0: walks a linked list one node too far and dereferences NULL. */
#include <stddef.h>
#include <stdlib.h>

#include "libcrash.h"

struct crash_node {
    int value;
    struct crash_node *next;
};

__attribute__((noinline)) int crash_v20_walk_list(struct crash_node *head, int steps)
{
    int magic_v20 = 2020;
    int walked = 0;
    struct crash_node *cursor = head;
    while (walked <= steps) {
        magic_v20 += cursor->value; /* CRASH HERE */
        cursor = cursor->next;
        walked++;
    }
    return magic_v20;
}

int crash_process_list(int length)
{
    struct crash_node *head = NULL;
    for (int i = 0; i < length; i++) {
        struct crash_node *node = malloc(sizeof *node);
        node->value = i;
        node->next = head;
        head = node;
    }
    return crash_v20_walk_list(head, length);
}
