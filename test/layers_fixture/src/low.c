/* low.c: the lower layer of the fixture; calls back up into high.c. */
extern int	fixture_low(int n);
extern int	fixture_high(int n);

int
fixture_low(int n)
{
	return n > 0 ? fixture_high(n - 1) : 1;
}
