/* high.c: the upper layer of the fixture; calls down into low.c. */
extern int	fixture_low(int n);
extern int	fixture_high(int n);

int
fixture_high(int n)
{
	return n > 0 ? fixture_low(n - 1) : 0;
}
