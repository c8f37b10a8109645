/*-------------------------------------------------------------------------
 *
 * dev_broker.c
 *	  A Kafka broker for development and tests, built on librdkafka's mock
 *	  cluster: it speaks the real Kafka protocol on loopback, so pg_kappa's
 *	  workers and an independent client such as kcat talk to it exactly as
 *	  they would to a real broker.
 *
 * Usage:
 *
 *	  dev_broker [--topic NAME:PARTITIONS]... [--port PORT] [--brokers N]
 *				 [--port-file PATH] [--control PATH] [--exit-on-eof]
 *
 * The topics given with --topic exist before anything is printed.  The first
 * line on stdout is then "BOOTSTRAP host:port[,host:port...]", the value for
 * bootstrap.servers; it is also written (with a newline) to --port-file,
 * through a temporary file and a rename so that a reader never sees it half
 * written.
 *
 * Commands are read line by line from stdin and, with --control, from a
 * FIFO at PATH (created if missing); each answers one line on stdout that
 * starts with "OK" or "ERR".  See usage() for the list and docs/dev-broker.md
 * for what the mock cluster can and cannot do.  End of file on stdin does not
 * stop the broker (a background job's stdin is /dev/null) unless
 * --exit-on-eof is given; SIGTERM, SIGINT and the "quit" command stop it
 * cleanly.
 *
 * Fixed port: librdkafka 2.0.2 binds each mock broker to 127.0.0.1 port 0,
 * so the kernel picks the port and there is no setting to choose it.  With
 * --port this program interposes bind(): while the mock cluster is being
 * created, a bind of an IPv4 loopback socket to port 0 is redirected to the
 * next requested port (PORT, PORT+1, ... one per broker).  Every loopback
 * bind also gets SO_REUSEADDR, so that neither a restart of this program nor
 * "up" after "down" (which closes and reopens the listener on the same port)
 * fails on connections in TIME_WAIT.  Binds of other addresses are passed
 * through unchanged.
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define DEVB_MAX_LINE	4096

/* Next port for the bind() interposer; 0 when not redirecting. */
static volatile int devb_next_port = 0;

/* Write end of the self-pipe the signal handler wakes the main loop with. */
static int	devb_signal_pipe[2] = {-1, -1};
static volatile sig_atomic_t devb_stop_signal = 0;

static rd_kafka_t *devb_rk = NULL;
static rd_kafka_mock_cluster_t *devb_cluster = NULL;
static int	devb_broker_count = 1;
static bool devb_fifo_created = false;

/* A source of command lines: stdin or the control FIFO. */
typedef struct DevbInput
{
	int			fd;
	const char *name;
	char		buf[DEVB_MAX_LINE];
	size_t		len;
	bool		open;
} DevbInput;

/* Kafka protocol request names, indexed by ApiKey. */
static const char *const devb_api_names[] = {
	"Produce", "Fetch", "ListOffsets", "Metadata", "LeaderAndIsr",
	"StopReplica", "UpdateMetadata", "ControlledShutdown", "OffsetCommit",
	"OffsetFetch", "FindCoordinator", "JoinGroup", "Heartbeat", "LeaveGroup",
	"SyncGroup", "DescribeGroups", "ListGroups", "SaslHandshake",
	"ApiVersions", "CreateTopics", "DeleteTopics", "DeleteRecords",
	"InitProducerId", "OffsetForLeaderEpoch", "AddPartitionsToTxn",
	"AddOffsetsToTxn", "EndTxn", "WriteTxnMarkers", "TxnOffsetCommit",
	"DescribeAcls", "CreateAcls", "DeleteAcls", "DescribeConfigs",
	"AlterConfigs", "AlterReplicaLogDirs", "DescribeLogDirs",
	"SaslAuthenticate", "CreatePartitions"
};

static void reply(const char *fmt,...) __attribute__((format(printf, 1, 2)));
static void fatal(const char *fmt,...) __attribute__((format(printf, 1, 2), noreturn));

#define DEVB_NUM_API_NAMES \
	((int) (sizeof(devb_api_names) / sizeof(devb_api_names[0])))

/*
 * bind() interposer.  The dynamic linker resolves librdkafka's calls to
 * bind() to this definition because the executable comes first in the
 * lookup order.  It forwards to the C library's bind(), setting SO_REUSEADDR
 * on IPv4 loopback sockets (the mock brokers' listeners, the only sockets
 * this program binds) and, while devb_next_port is set, turning a bind to
 * port 0 into a bind to devb_next_port (then advancing it).
 */
int
bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	static int	(*real_bind) (int, const struct sockaddr *, socklen_t) = NULL;

	if (real_bind == NULL)
	{
		real_bind = (int (*) (int, const struct sockaddr *, socklen_t))
			dlsym(RTLD_NEXT, "bind");
		if (real_bind == NULL)
		{
			errno = ENOSYS;
			return -1;
		}
	}

	if (addr != NULL && addr->sa_family == AF_INET &&
		len >= sizeof(struct sockaddr_in))
	{
		struct sockaddr_in sin;

		memcpy(&sin, addr, sizeof(sin));
		if (sin.sin_addr.s_addr == htonl(INADDR_LOOPBACK))
		{
			int			one = 1;

			/*
			 * A mock broker's listener.  Allow rebinding while connections
			 * closed by "down" are in TIME_WAIT: "up" binds the same port
			 * again.
			 */
			(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (sin.sin_port == 0 && devb_next_port > 0)
			{
				sin.sin_port = htons((unsigned short) devb_next_port);
				devb_next_port++;
				return real_bind(fd, (const struct sockaddr *) &sin,
								 sizeof(sin));
			}
		}
	}

	return real_bind(fd, addr, len);
}

/*
 * usage prints the command line and the control commands to 'out'.
 */
static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: dev_broker [OPTION]...\n"
			"A Kafka broker on librdkafka's mock cluster, for development and tests.\n"
			"\n"
			"Options:\n"
			"  --topic NAME:PARTITIONS  create a topic at start (repeatable)\n"
			"  --port PORT              listen on PORT (then PORT+1, ... per broker)\n"
			"                           instead of a port chosen by the kernel\n"
			"  --brokers N              number of brokers (default 1)\n"
			"  --port-file PATH         also write the bootstrap address to PATH\n"
			"  --control PATH           also read commands from the FIFO at PATH\n"
			"  --exit-on-eof            stop when stdin reaches end of file\n"
			"  --help                   show this help\n"
			"\n"
			"The first line on stdout is \"BOOTSTRAP host:port\".\n"
			"Commands (one per line on stdin or the FIFO; each answers OK or ERR):\n"
			"  create TOPIC PARTITIONS           create a topic\n"
			"  down [BROKER]                     take a broker down (default 1)\n"
			"  up [BROKER]                       bring it back up\n"
			"  error APIKEY ERRCODE [COUNT]      fail the next COUNT requests of\n"
			"                                    APIKEY (name or number, e.g. Fetch\n"
			"                                    or 1) with ERRCODE (name or number,\n"
			"                                    e.g. UNKNOWN_TOPIC_OR_PART or 3)\n"
			"  clear-errors APIKEY               drop pending injected errors\n"
			"  topic-error TOPIC ERRCODE         make metadata report ERRCODE for\n"
			"                                    TOPIC (NO_ERROR to clear)\n"
			"  rtt MS [BROKER]                   delay every response by MS\n"
			"  add-partitions TOPIC COUNT        not supported by librdkafka 2.0.2\n"
			"  bootstrap                         print the bootstrap address\n"
			"  help                              list the commands\n"
			"  quit                              stop the broker\n");
}

/*
 * reply prints one answer line on stdout and flushes it, so that a test
 * reading the pipe sees it at once.
 */
static void
reply(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

/*
 * fatal prints an error on stderr and exits with status 1.
 */
static void
fatal(const char *fmt,...)
{
	va_list		ap;

	fputs("dev_broker: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/*
 * handle_signal records SIGTERM/SIGINT and wakes the main loop.  Only
 * async-signal-safe calls here.
 */
static void
handle_signal(int signo)
{
	int			save_errno = errno;
	char		c = 1;

	devb_stop_signal = signo;
	if (devb_signal_pipe[1] >= 0)
		(void) write(devb_signal_pipe[1], &c, 1);
	errno = save_errno;
}

/*
 * parse_int parses a whole decimal string into *result within [min, max].
 * Returns false if 'str' is not such a number.
 */
static bool
parse_int(const char *str, long min, long max, long *result)
{
	char	   *end;
	long		number;

	if (str == NULL || *str == '\0')
		return false;
	errno = 0;
	number = strtol(str, &end, 10);
	if (errno != 0 || *end != '\0' || number < min || number > max)
		return false;
	*result = number;
	return true;
}

/*
 * parse_api_key maps a request name (case-insensitive, e.g. "Fetch") or
 * number to its ApiKey.  Returns -1 if unknown.
 */
static int
parse_api_key(const char *str)
{
	long		num;
	int			i;

	if (parse_int(str, 0, 32767, &num))
		return (int) num;
	for (i = 0; i < DEVB_NUM_API_NAMES; i++)
	{
		if (strcasecmp(str, devb_api_names[i]) == 0)
			return i;
	}
	return -1;
}

/*
 * parse_error_code maps an error name as librdkafka spells it without its
 * RD_KAFKA_RESP_ERR_ prefix (case-insensitive, e.g. UNKNOWN_TOPIC_OR_PART,
 * NO_ERROR) or a number to the error code.  Returns false if unknown.
 */
static bool
parse_error_code(const char *str, rd_kafka_resp_err_t *code)
{
	const struct rd_kafka_err_desc *descs;
	size_t		count;
	size_t		i;
	long		num;

	if (parse_int(str, -200, 32767, &num))
	{
		*code = (rd_kafka_resp_err_t) num;
		return true;
	}
	if (strncasecmp(str, "RD_KAFKA_RESP_ERR_", 18) == 0)
		str += 18;

	rd_kafka_get_err_descs(&descs, &count);
	for (i = 0; i < count; i++)
	{
		if (descs[i].name != NULL && strcasecmp(str, descs[i].name) == 0)
		{
			*code = descs[i].code;
			return true;
		}
	}
	return false;
}

/*
 * parse_broker reads an optional broker id argument (default 1) and checks
 * it names one of our brokers.
 */
static bool
parse_broker(const char *str, int32_t *broker_id)
{
	long		id = 1;

	if (str != NULL && !parse_int(str, 1, devb_broker_count, &id))
		return false;
	*broker_id = (int32_t) id;
	return true;
}

/*
 * create_topic creates a topic with 'partitions' partitions on the mock
 * cluster.  Returns the broker's error code (NO_ERROR on success).
 */
static rd_kafka_resp_err_t
create_topic(const char *name, int partitions)
{
	return rd_kafka_mock_topic_create(devb_cluster, name, partitions, 1);
}

/*
 * create_topic_from_spec splits "NAME:PARTITIONS" (PARTITIONS defaults to 1) and
 * creates the topic, exiting on a bad spec or a failure.
 */
static void
create_topic_from_spec(const char *spec)
{
	char	   *name = strdup(spec);
	char	   *colon;
	long		partitions = 1;
	rd_kafka_resp_err_t err;

	if (name == NULL)
		fatal("out of memory");
	colon = strrchr(name, ':');
	if (colon != NULL)
	{
		*colon = '\0';
		if (!parse_int(colon + 1, 1, 100000, &partitions))
			fatal("invalid partition count in --topic \"%s\"", spec);
	}
	if (*name == '\0')
		fatal("empty topic name in --topic \"%s\"", spec);

	err = create_topic(name, (int) partitions);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		fatal("could not create topic \"%s\": %s", name, rd_kafka_err2str(err));
	free(name);
}

/*
 * write_port_file writes the bootstrap line to 'path' atomically (temporary
 * file, then rename).
 */
static void
write_port_file(const char *path, const char *bootstraps)
{
	size_t		tmplen = strlen(path) + 16;
	char	   *tmp = malloc(tmplen);
	FILE	   *f;

	if (tmp == NULL)
		fatal("out of memory");
	snprintf(tmp, tmplen, "%s.tmp%d", path, (int) getpid());
	f = fopen(tmp, "w");
	if (f == NULL)
		fatal("could not open \"%s\": %s", tmp, strerror(errno));
	if (fprintf(f, "%s\n", bootstraps) < 0 || fclose(f) != 0)
		fatal("could not write \"%s\": %s", tmp, strerror(errno));
	if (rename(tmp, path) != 0)
		fatal("could not rename \"%s\" to \"%s\": %s", tmp, path, strerror(errno));
	free(tmp);
}

/*
 * check_port_free exits with a clear message if 'port' cannot be bound on
 * 127.0.0.1.  librdkafka 2.0.2 aborts on an assertion when a mock broker
 * fails to bind, so the requested ports are tried first.
 */
static void
check_port_free(int port)
{
	struct sockaddr_in sin;
	int			fd;
	int			one = 1;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		fatal("could not create a socket: %s", strerror(errno));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((unsigned short) port);
	(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *) &sin, sizeof(sin)) != 0)
		fatal("could not bind 127.0.0.1:%d: %s", port, strerror(errno));
	close(fd);
}

/*
 * open_control_fifo creates the FIFO at 'path' if missing (then removed at
 * exit) and opens it for reading.  It is opened read-write so that the broker itself counts as a
 * writer: writers may come and go without the reader ever seeing end of
 * file.
 */
static int
open_control_fifo(const char *path)
{
	struct stat st;
	int			fd;

	if (stat(path, &st) != 0)
	{
		if (errno != ENOENT)
			fatal("could not stat \"%s\": %s", path, strerror(errno));
		if (mkfifo(path, 0600) != 0)
			fatal("could not create FIFO \"%s\": %s", path, strerror(errno));
		devb_fifo_created = true;
	}
	else if (!S_ISFIFO(st.st_mode))
		fatal("\"%s\" exists and is not a FIFO", path);

	fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		fatal("could not open FIFO \"%s\": %s", path, strerror(errno));
	return fd;
}

/*
 * run_command executes one command line and prints its answer.  Returns
 * false when the broker must stop ("quit").
 */
static bool
run_command(char *line)
{
	char	   *argv[8];
	int			argc = 0;
	char	   *save = NULL;
	char	   *tok;
	rd_kafka_resp_err_t err;
	int32_t		broker_id;
	long		num;

	for (tok = strtok_r(line, " \t\r", &save);
		 tok != NULL && argc < 8;
		 tok = strtok_r(NULL, " \t\r", &save))
		argv[argc++] = tok;

	if (argc == 0 || argv[0][0] == '#')
		return true;			/* blank line or comment: no answer */

	if (strcmp(argv[0], "quit") == 0 || strcmp(argv[0], "exit") == 0)
	{
		reply("OK quit");
		return false;
	}
	else if (strcmp(argv[0], "help") == 0)
		reply("OK commands: create down up error clear-errors topic-error "
			  "rtt add-partitions bootstrap help quit (see dev_broker --help)");
	else if (strcmp(argv[0], "bootstrap") == 0)
		reply("OK %s", rd_kafka_mock_cluster_bootstraps(devb_cluster));
	else if (strcmp(argv[0], "create") == 0)
	{
		if (argc != 3 || !parse_int(argv[2], 1, 100000, &num))
			reply("ERR usage: create TOPIC PARTITIONS");
		else if ((err = create_topic(argv[1], (int) num)) != RD_KAFKA_RESP_ERR_NO_ERROR)
			reply("ERR create %s: %s", argv[1], rd_kafka_err2name(err));
		else
			reply("OK create %s %ld", argv[1], num);
	}
	else if (strcmp(argv[0], "down") == 0 || strcmp(argv[0], "up") == 0)
	{
		bool		down = (argv[0][0] == 'd');

		if (argc > 2 || !parse_broker(argc > 1 ? argv[1] : NULL, &broker_id))
			reply("ERR usage: %s [BROKER] with BROKER between 1 and %d",
				  argv[0], devb_broker_count);
		else
		{
			err = down ? rd_kafka_mock_broker_set_down(devb_cluster, broker_id)
				: rd_kafka_mock_broker_set_up(devb_cluster, broker_id);
			if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
				reply("ERR %s %d: %s", argv[0], (int) broker_id,
					  rd_kafka_err2name(err));
			else
				reply("OK %s %d", argv[0], (int) broker_id);
		}
	}
	else if (strcmp(argv[0], "error") == 0)
	{
		int			api_key;
		rd_kafka_resp_err_t code;
		long		count = 1;

		if (argc < 3 || argc > 4 ||
			(argc == 4 && !parse_int(argv[3], 1, 1000000, &count)))
			reply("ERR usage: error APIKEY ERRCODE [COUNT]");
		else if ((api_key = parse_api_key(argv[1])) < 0)
			reply("ERR unknown ApiKey \"%s\"", argv[1]);
		else if (!parse_error_code(argv[2], &code))
			reply("ERR unknown error code \"%s\"", argv[2]);
		else
		{
			rd_kafka_resp_err_t *errs = malloc(sizeof(*errs) * count);
			long		i;

			if (errs == NULL)
				fatal("out of memory");
			for (i = 0; i < count; i++)
				errs[i] = code;
			rd_kafka_mock_push_request_errors_array(devb_cluster,
													(int16_t) api_key,
													(size_t) count, errs);
			free(errs);
			reply("OK error %d %s %ld", api_key, rd_kafka_err2name(code), count);
		}
	}
	else if (strcmp(argv[0], "clear-errors") == 0)
	{
		int			api_key;

		if (argc != 2)
			reply("ERR usage: clear-errors APIKEY");
		else if ((api_key = parse_api_key(argv[1])) < 0)
			reply("ERR unknown ApiKey \"%s\"", argv[1]);
		else
		{
			rd_kafka_mock_clear_request_errors(devb_cluster, (int16_t) api_key);
			reply("OK clear-errors %d", api_key);
		}
	}
	else if (strcmp(argv[0], "topic-error") == 0)
	{
		rd_kafka_resp_err_t code;

		if (argc != 3)
			reply("ERR usage: topic-error TOPIC ERRCODE");
		else if (!parse_error_code(argv[2], &code))
			reply("ERR unknown error code \"%s\"", argv[2]);
		else
		{
			rd_kafka_mock_topic_set_error(devb_cluster, argv[1], code);
			reply("OK topic-error %s %s", argv[1], rd_kafka_err2name(code));
		}
	}
	else if (strcmp(argv[0], "rtt") == 0)
	{
		if (argc < 2 || argc > 3 || !parse_int(argv[1], 0, 3600000, &num) ||
			!parse_broker(argc > 2 ? argv[2] : NULL, &broker_id))
			reply("ERR usage: rtt MS [BROKER]");
		else if ((err = rd_kafka_mock_broker_set_rtt(devb_cluster, broker_id,
													 (int) num)) != RD_KAFKA_RESP_ERR_NO_ERROR)
			reply("ERR rtt: %s", rd_kafka_err2name(err));
		else
			reply("OK rtt %ld %d", num, (int) broker_id);
	}
	else if (strcmp(argv[0], "add-partitions") == 0 ||
			 strcmp(argv[0], "partitions") == 0)
		reply("ERR add-partitions: the mock cluster of librdkafka %s cannot add "
			  "partitions to an existing topic", rd_kafka_version_str());
	else
		reply("ERR unknown command \"%s\" (try help)", argv[0]);

	return true;
}

/*
 * read_commands reads what is available on 'in' and runs every complete
 * line.  Returns false when the broker must stop.  At end of file the input
 * is closed; stdin at end of file stops the broker only if 'exit_on_eof'.
 */
static bool
read_commands(DevbInput *in, bool exit_on_eof)
{
	ssize_t		n;
	char	   *nl;

	if (in->len >= sizeof(in->buf) - 1)
	{
		reply("ERR command line too long");
		in->len = 0;
	}

	do
		n = read(in->fd, in->buf + in->len, sizeof(in->buf) - 1 - in->len);
	while (n < 0 && errno == EINTR);

	if (n < 0)
	{
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return true;
		fatal("could not read %s: %s", in->name, strerror(errno));
	}
	if (n == 0)
	{
		/* end of file: run a last unterminated line, stop reading */
		in->open = false;
		if (in->len > 0)
		{
			in->buf[in->len] = '\0';
			in->len = 0;
			if (!run_command(in->buf))
				return false;
		}
		return !(exit_on_eof && in->fd == STDIN_FILENO);
	}
	in->len += n;

	while ((nl = memchr(in->buf, '\n', in->len)) != NULL)
	{
		size_t		linelen = nl - in->buf;

		*nl = '\0';
		if (!run_command(in->buf))
			return false;
		memmove(in->buf, nl + 1, in->len - linelen - 1);
		in->len -= linelen + 1;
	}
	return true;
}

/*
 * main parses the options, starts the mock cluster, announces its address
 * and serves commands until told to stop.
 */
int
main(int argc, char **argv)
{
	const char *port_file = NULL;
	const char *control_path = NULL;
	bool		exit_on_eof = false;
	long		port = 0;
	char		errstr[512];
	rd_kafka_conf_t *conf;
	const char *bootstraps;
	struct sigaction sa;
	DevbInput	inputs[2];
	int			ninputs = 0;
	int			i;
	bool		running = true;

	/* Options first (topics are created once the cluster exists) */
	for (i = 1; i < argc; i++)
	{
		const char *arg = argv[i];

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
		{
			usage(stdout);
			return 0;
		}
		else if (strcmp(arg, "--exit-on-eof") == 0)
			exit_on_eof = true;
		else if (strcmp(arg, "--topic") != 0 && strcmp(arg, "--port") != 0 &&
				 strcmp(arg, "--brokers") != 0 &&
				 strcmp(arg, "--port-file") != 0 &&
				 strcmp(arg, "--control") != 0)
		{
			fprintf(stderr, "dev_broker: unknown option \"%s\"\n", arg);
			usage(stderr);
			return 2;
		}
		else if (i + 1 >= argc)
		{
			fprintf(stderr, "dev_broker: missing value for \"%s\"\n", arg);
			usage(stderr);
			return 2;
		}
		else if (strcmp(arg, "--topic") == 0)
			i++;				/* created below */
		else if (strcmp(arg, "--port") == 0)
		{
			if (!parse_int(argv[++i], 1, 65535, &port))
				fatal("invalid port \"%s\"", argv[i]);
		}
		else if (strcmp(arg, "--brokers") == 0)
		{
			long		n;

			if (!parse_int(argv[++i], 1, 16, &n))
				fatal("invalid broker count \"%s\" (1 to 16)", argv[i]);
			devb_broker_count = (int) n;
		}
		else if (strcmp(arg, "--port-file") == 0)
			port_file = argv[++i];
		else
			control_path = argv[++i];	/* --control */
	}
	if (port > 0 && port + devb_broker_count - 1 > 65535)
		fatal("ports %ld to %ld do not all exist", port,
			  port + devb_broker_count - 1);

	/* Signals: wake the poll loop through a self-pipe */
	if (pipe(devb_signal_pipe) != 0)
		fatal("could not create pipe: %s", strerror(errno));
	fcntl(devb_signal_pipe[0], F_SETFL, O_NONBLOCK);
	fcntl(devb_signal_pipe[1], F_SETFL, O_NONBLOCK);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handle_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	/*
	 * The mock cluster needs a client handle for its bookkeeping; a producer
	 * that never produces will do.
	 */
	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "client.id", "dev_broker",
						  errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		fatal("%s", errstr);
	/* hide the notice that this handle has no bootstrap.servers */
	if (rd_kafka_conf_set(conf, "log_level", "4",
						  errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		fatal("%s", errstr);
	devb_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (devb_rk == NULL)
		fatal("could not create the client handle: %s", errstr);

	for (i = 0; port > 0 && i < devb_broker_count; i++)
		check_port_free((int) port + i);
	devb_next_port = (int) port;
	devb_cluster = rd_kafka_mock_cluster_new(devb_rk, devb_broker_count);
	devb_next_port = 0;
	if (devb_cluster == NULL)
	{
		if (port > 0)
			fatal("could not start the mock cluster on port %ld "
				  "(in use? see the log above)", port);
		fatal("could not start the mock cluster (see the log above)");
	}

	for (i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "--topic") == 0)
			create_topic_from_spec(argv[++i]);
		else if (strcmp(argv[i], "--port") == 0 ||
				 strcmp(argv[i], "--brokers") == 0 ||
				 strcmp(argv[i], "--port-file") == 0 ||
				 strcmp(argv[i], "--control") == 0)
			i++;
	}

	bootstraps = rd_kafka_mock_cluster_bootstraps(devb_cluster);
	if (port_file != NULL)
		write_port_file(port_file, bootstraps);

	inputs[ninputs].fd = STDIN_FILENO;
	inputs[ninputs].name = "stdin";
	inputs[ninputs].len = 0;
	inputs[ninputs].open = true;
	ninputs++;
	if (control_path != NULL)
	{
		inputs[ninputs].fd = open_control_fifo(control_path);
		inputs[ninputs].name = control_path;
		inputs[ninputs].len = 0;
		inputs[ninputs].open = true;
		ninputs++;
	}

	reply("BOOTSTRAP %s", bootstraps);

	while (running && !devb_stop_signal)
	{
		struct pollfd pfds[3];
		int			map[3];
		int			npfds = 0;
		int			rc;

		pfds[npfds].fd = devb_signal_pipe[0];
		pfds[npfds].events = POLLIN;
		map[npfds++] = -1;
		for (i = 0; i < ninputs; i++)
		{
			if (!inputs[i].open)
				continue;
			pfds[npfds].fd = inputs[i].fd;
			pfds[npfds].events = POLLIN;
			map[npfds++] = i;
		}

		rc = poll(pfds, npfds, -1);
		if (rc < 0)
		{
			if (errno == EINTR)
				continue;
			fatal("poll failed: %s", strerror(errno));
		}

		for (i = 1; i < npfds && running; i++)
		{
			if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))
				running = read_commands(&inputs[map[i]], exit_on_eof);
		}
	}

	if (devb_stop_signal)
		fprintf(stderr, "dev_broker: stopping on signal %d\n",
				(int) devb_stop_signal);

	rd_kafka_mock_cluster_destroy(devb_cluster);
	rd_kafka_destroy(devb_rk);
	if (port_file != NULL)
		(void) unlink(port_file);
	if (control_path != NULL)
	{
		(void) close(inputs[1].fd);
		if (devb_fifo_created)
			(void) unlink(control_path);
	}

	return 0;
}
