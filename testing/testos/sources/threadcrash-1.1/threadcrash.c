/* threadcrash 1.1: the same four threads, renamed, plus a thread count in the log.
 *
 * The functions carry the version in their names so a backtrace shows which
 * build's debuginfo was used.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

enum { TC_THREADS = 4 };

static pthread_mutex_t tc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tc_never = PTHREAD_COND_INITIALIZER;
static int tc_pipe[2];

static void *threadcrash_v11_dozer(void *arg)
{
    int sleeper_id = 111;
    (void)arg;
    for (;;)
        sleep(sleeper_id);
    return NULL;
}

static void *threadcrash_v11_condwaiter(void *arg)
{
    int waiter_id = 112;
    (void)arg;
    pthread_mutex_lock(&tc_lock);
    for (;;)
        pthread_cond_wait(&tc_never, &tc_lock);
    return (void *)(long)waiter_id;
}

static void *threadcrash_v11_pipereader(void *arg)
{
    char reader_buffer[32];
    (void)arg;
    for (;;)
        if (read(tc_pipe[0], reader_buffer, sizeof reader_buffer) <= 0)
            break;
    return NULL;
}

static void *threadcrash_v11_segfaulter(void *arg)
{
    int faulter_id = 114;
    volatile int *faulter_target = NULL;
    struct timespec settle = {0, 300 * 1000 * 1000};
    (void)arg;
    nanosleep(&settle, NULL); /* let the other threads block first */
    faulter_target[faulter_id] = faulter_id; /* CRASH HERE */
    return NULL;
}

int main(void)
{
    static void *(*const bodies[TC_THREADS])(void *) = {
        threadcrash_v11_dozer, threadcrash_v11_condwaiter, threadcrash_v11_pipereader,
        threadcrash_v11_segfaulter,
    };
    static const char *const names[TC_THREADS] = {"tc-sleeper", "tc-waiter", "tc-reader",
                                                  "tc-faulter"};
    pthread_t threads[TC_THREADS];
    if (pipe(tc_pipe) != 0)
        return 1;
    fprintf(stderr, "threadcrash 1.1 starts %d threads\n", TC_THREADS);
    for (int i = 0; i < TC_THREADS; i++) {
        pthread_create(&threads[i], NULL, bodies[i], NULL);
        pthread_setname_np(threads[i], names[i]);
    }
    for (int i = 0; i < TC_THREADS; i++)
        pthread_join(threads[i], NULL);
    return 0;
}
