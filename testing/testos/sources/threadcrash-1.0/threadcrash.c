/* threadcrash 1.0: three named threads block in distinct functions, a fourth segfaults. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t tc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tc_never = PTHREAD_COND_INITIALIZER;
static int tc_pipe[2];

static void *threadcrash_v10_sleeper(void *arg)
{
    int sleeper_id = 101;
    (void)arg;
    for (;;)
        sleep(sleeper_id);
    return NULL;
}

static void *threadcrash_v10_waiter(void *arg)
{
    int waiter_id = 102;
    (void)arg;
    pthread_mutex_lock(&tc_lock);
    for (;;)
        pthread_cond_wait(&tc_never, &tc_lock);
    return (void *)(long)waiter_id;
}

static void *threadcrash_v10_reader(void *arg)
{
    char reader_buffer[16];
    (void)arg;
    for (;;)
        if (read(tc_pipe[0], reader_buffer, sizeof reader_buffer) <= 0)
            break;
    return NULL;
}

static void *threadcrash_v10_faulter(void *arg)
{
    int faulter_id = 104;
    volatile int *faulter_target = NULL;
    struct timespec settle = {0, 300 * 1000 * 1000};
    (void)arg;
    nanosleep(&settle, NULL); /* let the other threads block first */
    *faulter_target = faulter_id; /* CRASH HERE */
    return NULL;
}

int main(void)
{
    static void *(*const bodies[])(void *) = {
        threadcrash_v10_sleeper, threadcrash_v10_waiter, threadcrash_v10_reader,
        threadcrash_v10_faulter,
    };
    static const char *const names[] = {"tc-sleeper", "tc-waiter", "tc-reader", "tc-faulter"};
    pthread_t threads[4];
    if (pipe(tc_pipe) != 0)
        return 1;
    for (int i = 0; i < 4; i++) {
        pthread_create(&threads[i], NULL, bodies[i], NULL);
        pthread_setname_np(threads[i], names[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    return 0;
}
