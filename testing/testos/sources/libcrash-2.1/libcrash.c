/* libcrash 2.1: a rewrite of the list code with a new bug.
 *
 * The traversal now counts nodes before it visits them, which moved the
 * faulting line and renamed the function, so a backtrace tells the two
 * versions apart.
 */
#include <stddef.h>
#include <stdlib.h>

#include "libcrash.h"

struct crash_node {
    int value;
    struct crash_node *next;
};

static int crash_v21_count(const struct crash_node *head)
{
    int count = 0;
    for (; head != NULL; head = head->next)
        count++;
    return count;
}

__attribute__((noinline)) int crash_v21_traverse_nodes(struct crash_node *first, int budget)
{
    int magic_v21 = 2121;
    int counted = crash_v21_count(first);
    struct crash_node *cursor = first;
    for (int visited = 0; visited <= budget + counted; visited++) {
        magic_v21 ^= cursor->value; /* CRASH HERE */
        cursor = cursor->next;
    }
    return magic_v21;
}

int crash_process_list(int length)
{
    struct crash_node *first = NULL;
    for (int i = 0; i < length; i++) {
        struct crash_node *node = calloc(1, sizeof *node);
        node->value = i * 3;
        node->next = first;
        first = node;
    }
    return crash_v21_traverse_nodes(first, length);
}
